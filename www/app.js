// The campaign form. It draws itself from the campaign's description served by harbour (so the
// form and the validator cannot disagree), in the visitor's language (six locales, each a file
// loaded only when chosen), and solves the description's proof-of-work challenge in a Web Worker
// while the visitor fills the form. It sends JSON with an Idempotency-Key made once per entry,
// kept across retries, and the solution for that key; it follows harbour's answers: field errors
// next to their fields (422), a visible countdown before retrying (429), backoff with jitter (503,
// network), and a fresh challenge, solved and sent again with the same key, when the one it had
// was refused (a day-old tab). Beside the form it shows the campaign's notice (who collects the
// entry, why, where it is stored for the country chosen, how long it is kept) and sends the
// notice's version with the entry; where the chosen country moves the entry to another region, it
// asks the visitor to confirm that first. It sends each entry where the description says entries
// for the country chosen are taken (a region's own hostname, its ingress, or this page's host);
// told 421 `wrong_ingress`, it sends the same entry once more to the address named, if the
// description lists it.
"use strict";
(() => {
  const LOCALES = ["en", "zh-CN", "ru", "it", "de", "fr"];
  const $ = (id) => document.getElementById(id);
  const campaign = document.documentElement.dataset.campaign;
  const form = $("entry");
  const fieldsBox = $("fields");
  const button = $("submit");
  const status = $("form-status");
  const alertBox = $("form-alert");
  const langSelect = $("lang");
  const MAX_OUTAGE_RETRIES = 6;
  const MAX_CHALLENGE_RETRIES = 3;
  const REQUEST_TIMEOUT_MS = 10_000;
  // A challenge this close to its expiry is replaced before sending.
  const EXPIRY_MARGIN_MS = 30_000;
  let locale = pickLocale();
  let t = null; // the chosen locale's texts
  let description = null;
  let key = newKey();
  let work = null; // { key, expiresAt, solution: Promise<string> }
  let worker = null;
  let busy = false;
  // Set once an entry is stored: the button stays off until the visitor edits the form, so the
  // second click of a double click (or a click on the receipt's button) sends no empty entry.
  let sent = false;
  let shown = () => {}; // redraws what the status says, in the current language
  let errors = [];

  function pickLocale() {
    const asked = new URLSearchParams(location.search).get("lang");
    for (const tag of [asked, ...(navigator.languages || [navigator.language])]) {
      if (!tag) continue;
      const lower = tag.toLowerCase();
      const found = LOCALES.find((l) => l.toLowerCase() === lower) || LOCALES.find((l) => l.split("-")[0] === lower.split("-")[0]);
      if (found) return found;
    }
    return LOCALES[0];
  }
  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }
  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const fill = (text, values) => text.replace(/\{(\w+)\}/g, (_, name) => values[name] ?? "");
  async function getJSON(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(String(response.status));
    return response.json();
  }
  const loadDescription = () => getJSON(`/api/campaigns/${encodeURIComponent(campaign)}?lang=${locale}`);

  // What the status line says, kept as a function of the texts so a language switch redraws it;
  // `code` is the answer's problem code, kept on the element for styling and tests.
  function say(text, kind = "", code = "") {
    if (code) status.dataset.code = code; else delete status.dataset.code;
    shown = () => {
      status.className = "status" + (kind ? " " + kind : "");
      status.textContent = text();
    };
    alertBox.textContent = "";
    shown();
  }

  // Solves `challenge` for the current key in a worker; the page keeps filling meanwhile.
  function solve(challenge) {
    worker?.terminate();
    worker = new Worker("/pow.js");
    const forKey = key;
    const started = performance.now();
    const solution = new Promise((resolve, reject) => {
      worker.onmessage = ({ data }) => {
        if (!data.nonce) return reject(new Error("no solution"));
        form.dataset.solveMs = String(Math.round(performance.now() - started));
        form.dataset.solveHashes = String(data.hashes);
        resolve(`${challenge.token}.${data.nonce}`);
      };
      worker.onerror = () => reject(new Error("solver failed"));
    });
    solution.catch(() => {}); // awaited when sending
    worker.postMessage({ token: challenge.token, key: forKey, bits: challenge.difficulty_bits });
    work = { key: forKey, expiresAt: Date.now() + challenge.expires_in_ms - EXPIRY_MARGIN_MS, solution };
  }
  async function freshWork() {
    solve((await loadDescription()).challenge);
  }
  async function solution() {
    if (!work || work.key !== key || Date.now() > work.expiresAt) await freshWork();
    return work.solution;
  }

  function optionLabels(f) {
    let names = null;
    if (f.value_names) {
      try { names = new Intl.DisplayNames([locale], { type: f.value_names }); } catch { /* old browser */ }
    }
    const labelled = f.values.map((v) => [v, names ? names.of(v) || v : v]);
    return names ? labelled.sort((a, b) => a[1].localeCompare(b[1], locale)) : labelled;
  }
  function fillOptions(select, f) {
    const value = select.value;
    select.replaceChildren(el("option", { value: "" }, t.choose), ...optionLabels(f).map(([v, label]) => el("option", { value: v }, label)));
    select.value = value;
  }

  // Draws a field from its description: the control is `input`, never the field type, so a new
  // type that reuses a control needs nothing here. Texts are set by `applyTexts`.
  function renderField(f) {
    const id = "f-" + f.name;
    const check = f.input === "checkbox";
    const box = el("div", { class: "field" + (check ? " check" : "") });
    const error = el("p", { id: id + "-error", class: "error-text" });
    const common = { id, name: f.name, "aria-describedby": id + "-error", required: f.required, autocomplete: f.autocomplete };
    let input;
    if (check) input = el("input", { ...common, type: "checkbox", value: "true" });
    else if (f.input === "select") input = el("select", common);
    else {
      const autocomplete = f.autocomplete ?? (f.name === "name" ? "name" : undefined);
      input = el("input", { ...common, type: f.input, autocomplete, maxlength: f.max_length, min: f.min ?? undefined, max: f.max ?? undefined });
    }
    const label = el("label", { for: id });
    if (check) box.append(input, label); else box.append(label, input);
    const wrap = check ? el("div", { class: "field" }) : box;
    if (check) wrap.append(box);
    wrap.append(error);
    return wrap;
  }

  // Where an entry is stored for the country chosen, as the description says (the edge worked it
  // out by its own rule for this visitor): `{region, name, confirm}`, `{refused}` or null.
  function storageFor(country) {
    const storage = description.storage;
    if (!country) return null;
    const choice = storage.choices.find((c) => c.countries.includes(country)) ||
      storage.choices.find((c) => c.region === storage.rest_of_world);
    return choice ? choice.then : null;
  }
  const signalField = () => description.fields.find((f) => f.residency_signal);
  // Where this entry is sent: the chosen country's region's address, else the description's own.
  function submitUrl() {
    const field = signalField();
    const choice = field ? storageFor(form.elements[field.name].value) : null;
    return (choice && choice.submit) || description.submit;
  }
  const knownUrl = (url) => url === description.submit || description.storage.choices.some((c) => c.then && c.then.submit === url);
  function showStorage() {
    const field = signalField();
    const choice = field ? storageFor(form.elements[field.name].value) : null;
    $("n-stored").textContent = !choice ? t.notice.stored_pick : choice.refused ? t.fields.residency_conflict : choice.name;
    const box = $("confirm-storage");
    box.hidden = !(choice && choice.confirm);
    if (box.hidden) $("f-confirm_region").checked = false;
    else $("f-confirm_region-label").textContent = fill(t.notice.confirm, { name: choice.name });
  }
  function applyNotice() {
    const n = description.notice;
    $("notice").hidden = false;
    $("notice-title").textContent = t.notice.title;
    $("n-controller-t").textContent = t.notice.controller;
    $("n-controller").textContent = `${n.controller} (${n.contact})`;
    $("n-purpose-t").textContent = t.notice.purpose;
    $("n-purpose").textContent = n.purpose;
    $("n-stored-t").textContent = t.notice.stored;
    $("n-kept-t").textContent = t.notice.kept;
    const ends = new Date(n.ends).toLocaleDateString(locale, { dateStyle: "long", timeZone: "UTC" });
    $("n-kept").textContent = fill(t.notice.kept_text, { days: n.retention_days, date: ends });
    $("n-link").href = n.link;
    $("n-link").textContent = t.notice.link;
    showStorage();
  }

  // The confirmation a move to another region takes; shown only when the chosen country needs it.
  function confirmBox() {
    const box = el("div", { class: "field", id: "confirm-storage", hidden: true });
    const row = el("div", { class: "field check" });
    row.append(
      el("input", { id: "f-confirm_region", name: "confirm_region", type: "checkbox", "aria-describedby": "f-confirm_region-error" }),
      el("label", { for: "f-confirm_region", id: "f-confirm_region-label" }),
    );
    box.append(row, el("p", { id: "f-confirm_region-error", class: "error-text" }));
    return box;
  }

  function applyTexts() {
    document.documentElement.lang = locale;
    langSelect.value = locale;
    $("lang-label").textContent = t.language;
    button.textContent = t.submit;
    if (!description) return;
    document.title = $("title").textContent = description.title;
    $("intro").textContent = description.intro || "";
    for (const f of description.fields) {
      form.querySelector(`label[for="f-${f.name}"]`).textContent = f.label + (f.required || f.type === "bool" ? "" : " " + t.optional); // a box is optional unless required
      if (f.input === "select") fillOptions(form.elements[f.name], f);
    }
    applyNotice();
    showErrors(errors, false);
    shown();
  }

  function values() {
    const out = {};
    for (const f of description.fields) {
      const input = form.elements[f.name];
      if (f.input === "checkbox") out[f.name] = input.checked;
      else if (f.input === "number") { if (input.value !== "") out[f.name] = Number(input.value); }
      else if (input.value.trim() !== "") out[f.name] = input.value.normalize("NFC");
    }
    const honeypot = $("f-hp");
    if (description.honeypot && honeypot.value) out[description.honeypot] = honeypot.value;
    const field = signalField();
    const choice = field ? storageFor(form.elements[field.name].value) : null;
    if (choice && choice.confirm && $("f-confirm_region").checked) out.confirm_region = choice.region;
    return out;
  }

  function clearErrors() {
    errors = [];
    for (const node of form.querySelectorAll(".error-text")) node.textContent = "";
    for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    alertBox.textContent = "";
  }
  const fieldText = (e) => {
    const f = description.fields.find((d) => d.name === e.field) || {};
    return t.fields[e.code] ? fill(t.fields[e.code], { max: f.max_length ?? f.max, min: f.min }) : e.detail;
  };
  const problemText = (answer) => t.problems[answer.code] || answer.detail || t.failed;

  // Marks each field error; with `focus`, moves focus to the first, whose description (the
  // error) a screen reader reads with its name, and announces the summary.
  function showErrors(list, focus = true) {
    errors = list;
    if (!list.length) return;
    let first = null;
    const loose = [];
    for (const e of list) {
      const input = form.elements[e.field];
      const slot = $("f-" + e.field + "-error");
      if (!input || !slot) { loose.push(e); continue; }
      input.setAttribute("aria-invalid", "true");
      slot.textContent = fieldText(e);
      slot.dataset.code = e.code;
      first = first || input;
    }
    status.textContent = "";
    alertBox.textContent = loose.length ? loose.map(fieldText).join(" ") : t.fix;
    shown = () => {};
    if (focus && first) first.focus();
  }

  async function countdown(seconds, text) {
    for (let left = seconds; left > 0; left--) {
      say(() => `${t[text]} ${fill(t.retry_in, { s: left })}`);
      await sleep(1000);
    }
  }

  async function send(body, url) {
    let outages = 0;
    let refreshed = 0;
    let moved = false;
    for (;;) {
      let response = null;
      let answer = {};
      try {
        const proof = await solution().catch((error) => { work = null; throw error; });
        say(() => t.sending);
        response = await fetch(url, {
          method: "POST",
          headers: {
            "content-type": "application/json", "idempotency-key": key, "harbour-challenge": proof,
            // The notice this page shows, which the entry records (the edge refuses another).
            "harbour-notice": `${description.lang}.${description.notice.version}`,
          },
          body,
          // A hung answer is retried like an outage; the key makes the retry harmless.
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        const parsed = await response.json().catch(() => null);
        if (parsed === null && response.status === 202) response = null; // a receipt we could not read
        answer = parsed || {};
      } catch { response = null; /* network, timeout or no challenge: retried below like an outage */ }
      const code = response ? response.status : 0;
      if (code === 202) return { ok: true, answer };
      if (code === 422) {
        const list = answer.errors || [];
        if (list.some((e) => e.code === "notice_outdated")) {
          // The notice changed since this page loaded: show the current one before anything is sent.
          description = await loadDescription();
          applyTexts();
        }
        return { ok: false, errors: list };
      }
      if (String(answer.code).startsWith("challenge_") && ++refreshed <= MAX_CHALLENGE_RETRIES) {
        // Stale or refused work (a day-old tab): solve a fresh challenge for the same key.
        work = null;
        continue;
      }
      if (code === 421 && answer.code === "wrong_ingress" && !moved && knownUrl(answer.submit)) {
        // Taken at another address (the network moved since the form loaded): the same entry, once.
        moved = true;
        url = answer.submit;
        continue;
      }
      if (code === 429) {
        const wait = Number(response.headers.get("retry-after")) || answer.retry_after_s || 5;
        await countdown(Math.min(wait, 120), "busy");
        continue;
      }
      if (code === 0 || code === 502 || code === 503 || code === 504) {
        if (++outages > MAX_OUTAGE_RETRIES) return { ok: false, text: () => t.gave_up };
        const hinted = response && Number(response.headers.get("retry-after"));
        const backoff = Math.min(30, 2 ** outages) * (0.5 + Math.random() / 2);
        await countdown(Math.max(1, Math.round(hinted || backoff)), "slow");
        continue;
      }
      // A refused entry is finished with: whatever is sent next is a new entry with a new key.
      if (code === 409) key = newKey();
      return { ok: false, text: () => problemText(answer), code: answer.code };
    }
  }

  function showReceipt(receipt) {
    shown = () => {
      status.className = "status ok";
      const box = el("div", { class: "receipt" });
      box.append(el("strong", {}, t.thanks + " "), t.receipt + " ", el("code", { id: "receipt-id" }, receipt.id));
      box.dataset.region = receipt.region;
      status.replaceChildren(box);
    };
    shown();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy || sent || !description) return; // a stored entry's form sends nothing until edited
    busy = true;
    button.disabled = true;
    clearErrors();
    say(() => t.preparing);
    try {
      const result = await send(JSON.stringify(values()), submitUrl());
      if (result.ok) {
        form.reset();
        sent = true;
        key = newKey();
        showReceipt(result.answer.receipt);
        freshWork().catch(() => {}); // the next entry's work, ahead of time
      } else if (result.errors) {
        showErrors(result.errors);
      } else {
        say(result.text, "error", result.code);
      }
    } finally {
      busy = false;
      button.disabled = sent;
    }
  });

  form.addEventListener("input", () => {
    if (!sent) return;
    sent = false;
    button.disabled = busy;
  });

  // Loads the chosen locale's texts and the description in it; the first load also draws the
  // fields and starts solving. A later one relabels what is there and keeps the work under way.
  async function load() {
    const [texts, described] = await Promise.all([getJSON(`/locales/${locale}.json`), loadDescription()]);
    t = texts;
    if (!description) {
      fieldsBox.replaceChildren(...described.fields.map(renderField), confirmBox());
      const field = described.fields.find((f) => f.residency_signal);
      if (field) form.elements[field.name].addEventListener("change", showStorage);
      if (described.honeypot) {
        $("f-hp").name = described.honeypot;
        $("hp").hidden = false;
      }
      solve(described.challenge);
    }
    description = described;
    applyTexts();
    button.disabled = busy || sent;
  }

  langSelect.value = locale;
  langSelect.addEventListener("change", () => {
    locale = langSelect.value;
    load().catch(() => {});
  });
  load().catch(() => {
    fieldsBox.replaceChildren(el("p", { class: "status error" }, t ? t.load_failed : "The form could not be loaded. Please reload the page."));
  });
})();
