// The campaign form. It draws itself from the campaign's description served by harbour (so the
// form and the validator cannot disagree), sends JSON with an Idempotency-Key made once per
// entry and kept across retries, and follows harbour's answers: field errors next to their
// fields (422), a visible countdown before retrying (429), backoff with jitter (503, network).
"use strict";
(() => {
  const campaign = document.documentElement.dataset.campaign;
  const form = document.getElementById("entry");
  const fieldsBox = document.getElementById("fields");
  const button = document.getElementById("submit");
  const status = document.getElementById("form-status");
  // What the page says next to a field, per error code, where the server's detail is not words a
  // visitor can act on; every other code shows the server's detail. Texts live here, in one place.
  const FIELD_ERROR_TEXT = {
    residency_conflict:
      "You are connecting from a country whose data-protection law differs from that of the country you chose, so your entry cannot be stored. Please choose the country you are in now.",
  };
  const MAX_OUTAGE_RETRIES = 6;
  const REQUEST_TIMEOUT_MS = 10_000;
  // Everything the page says about an answer, in one place (a translation replaces this table).
  const TEXT = {
    required: "Please correct the highlighted fields.",
    busy: "Lots of entries right now.",
    retrying: (text, seconds) => `${text} Retrying in ${seconds} s…`,
    slow: "Saving is taking longer than usual.",
    outage: "We could not save your entry. Please try again in a few minutes; your entry will not be counted twice.",
    alreadyEntered: "You have already entered this draw: only one entry per person counts, and we have yours.",
    changed: "This entry changed after it was first sent. Please submit again.",
    failed: "Something went wrong. Please try again.",
  };
  let description = null;
  let key = newKey();
  let busy = false;

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

  // `code` is the answer's problem code, kept on the element for styling and tests.
  function say(text, kind = "", code = "") {
    status.className = "status" + (kind ? " " + kind : "");
    status.textContent = text;
    if (code) status.dataset.code = code; else delete status.dataset.code;
  }

  // Option labels: a select's values as they are, or their names in the visitor's language
  // when the description says what the codes are (`value_names`, an Intl.DisplayNames type).
  function optionLabels(f) {
    let names = null;
    if (f.value_names) {
      try { names = new Intl.DisplayNames([navigator.language || "en"], { type: f.value_names }); } catch { /* old browser */ }
    }
    const labelled = f.values.map((v) => [v, names ? names.of(v) || v : v]);
    return names ? labelled.sort((a, b) => a[1].localeCompare(b[1])) : labelled;
  }

  // Draws a field from its description: the control is `input`, never the field type, so a new
  // type that reuses a control needs nothing here.
  function renderField(f) {
    const id = "f-" + f.name;
    const check = f.input === "checkbox";
    const box = el("div", { class: "field" + (check ? " check" : "") });
    const error = el("p", { id: id + "-error", class: "error-text" });
    const common = { id, name: f.name, "aria-describedby": id + "-error", required: f.required, autocomplete: f.autocomplete };
    let input;
    if (check) {
      input = el("input", { ...common, type: "checkbox", value: "true" });
    } else if (f.input === "select") {
      input = el("select", common);
      input.append(el("option", { value: "" }, "Choose…"));
      for (const [value, label] of optionLabels(f)) input.append(el("option", { value }, label));
    } else {
      const autocomplete = f.autocomplete ?? (f.name === "name" ? "name" : undefined);
      input = el("input", { ...common, type: f.input, autocomplete, maxlength: f.max_length, min: f.min ?? undefined, max: f.max ?? undefined });
    }
    const label = el("label", { for: id }, f.label + (f.required ? "" : " (optional)"));
    if (check) box.append(input, label); else box.append(label, input);
    const wrap = check ? el("div", { class: "field" }) : box;
    if (check) wrap.append(box);
    wrap.append(error);
    return wrap;
  }

  function values() {
    const out = {};
    for (const f of description.fields) {
      const input = form.elements[f.name];
      if (f.input === "checkbox") out[f.name] = input.checked;
      else if (f.input === "number") { if (input.value !== "") out[f.name] = Number(input.value); }
      else if (input.value.trim() !== "") out[f.name] = input.value.normalize("NFC");
    }
    if (description.form_token) out._form = description.form_token;
    const honeypot = form.elements[description.honeypot];
    if (honeypot && honeypot.value) out[description.honeypot] = honeypot.value;
    return out;
  }

  function clearErrors() {
    for (const node of form.querySelectorAll(".error-text")) node.textContent = "";
    for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  }

  function showErrors(errors) {
    let first = null;
    const loose = [];
    for (const e of errors) {
      const input = form.elements[e.field];
      const slot = document.getElementById("f-" + e.field + "-error");
      if (!input || !slot) { loose.push(e.detail); continue; }
      input.setAttribute("aria-invalid", "true");
      slot.textContent = FIELD_ERROR_TEXT[e.code] ?? e.detail;
      slot.dataset.code = e.code;
      first = first || input;
    }
    say(loose.length ? loose.join(" ") : TEXT.required, "error");
    if (first) first.focus();
  }

  async function countdown(seconds, text) {
    for (let left = seconds; left > 0; left--) {
      say(TEXT.retrying(text, left));
      await sleep(1000);
    }
  }

  async function send(body) {
    let outages = 0;
    for (;;) {
      let response = null;
      let answer = {};
      try {
        response = await fetch(description.submit, {
          method: "POST",
          headers: { "content-type": "application/json", "idempotency-key": key },
          body,
          // A hung answer is retried like an outage; the key makes the retry harmless.
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        const parsed = await response.json().catch(() => null);
        if (parsed === null && response.status === 202) response = null; // a receipt we could not read
        answer = parsed || {};
      } catch { response = null; /* network or timeout: retried below like an outage */ }
      const code = response ? response.status : 0;
      if (code === 202) return { ok: true, answer };
      if (code === 422) return { ok: false, errors: answer.errors || [] };
      if (code === 429) {
        const wait = Number(response.headers.get("retry-after")) || answer.retry_after_s || 5;
        await countdown(Math.min(wait, 120), TEXT.busy);
        continue;
      }
      if (code === 0 || code === 502 || code === 503 || code === 504) {
        if (++outages > MAX_OUTAGE_RETRIES) return { ok: false, message: TEXT.outage };
        const hinted = response && Number(response.headers.get("retry-after"));
        const backoff = Math.min(30, 2 ** outages) * (0.5 + Math.random() / 2);
        await countdown(Math.max(1, Math.round(hinted || backoff)), TEXT.slow);
        continue;
      }
      // A refused entry is finished with: whatever is sent next is a new entry with a new key.
      if (code === 409 && answer.code === "already_entered") { key = newKey(); return { ok: false, message: TEXT.alreadyEntered, code: answer.code }; }
      if (code === 409) { key = newKey(); return { ok: false, message: TEXT.changed }; }
      return { ok: false, message: answer.detail || TEXT.failed };
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy || !description) return;
    busy = true;
    button.disabled = true;
    clearErrors();
    say("Sending…");
    try {
      const result = await send(JSON.stringify(values()));
      if (result.ok) {
        const { receipt } = result.answer;
        form.reset();
        key = newKey();
        status.className = "status ok";
        status.replaceChildren(el("div", { class: "receipt" }));
        status.firstChild.append(el("strong", {}, "Thank you, you are in the draw. "), "Your receipt: ", el("code", { id: "receipt-id" }, receipt.id));
        status.firstChild.dataset.region = receipt.region;
      } else if (result.errors) {
        showErrors(result.errors);
      } else {
        say(result.message, "error", result.code);
      }
    } finally {
      busy = false;
      button.disabled = false;
    }
  });

  async function load() {
    try {
      const response = await fetch(`/api/campaigns/${encodeURIComponent(campaign)}`);
      if (!response.ok) throw new Error(String(response.status));
      description = await response.json();
    } catch {
      fieldsBox.replaceChildren(el("p", { class: "status error" }, "The form could not be loaded. Please reload the page."));
      return;
    }
    document.getElementById("title").textContent = description.title;
    fieldsBox.replaceChildren(...description.fields.map(renderField));
    button.disabled = false;
  }
  load();
})();
