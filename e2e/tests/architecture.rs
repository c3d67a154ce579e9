//! The shape of the workspace, checked on the syntax tree of every crate (`syn`, a full parse;
//! line numbers from `proc-macro2`'s span locations), so the rules hold by construction rather
//! than by a text search that a line break or a nested `use` slips past.
//!
//! Read: each workspace member's `src/**.rs` from its targets' roots (`lib.rs`, `main.rs`,
//! `bin/*`) down their `mod` declarations, and `e2e/tests/*.rs` (the harness's scenarios are
//! code too); `#[cfg(test)]` items and `#[test]` functions are left out. A source file that no
//! target reaches fails the reading, so nothing is skipped unseen.
//!
//! The rules:
//! (a) no module cycle inside any target of any crate; an edge is every path the code names
//!     (`use` trees, nested or not, `crate::`, `super::`, `self::`, paths in expressions, types
//!     and macro arguments) resolved, through re-exports, to the file module it lands in;
//! (b) no function (free, impl or trait default) over `MOST_LINES`; harbour-core's request flow
//!     (`REQUEST_FLOW`) under `FLOW_MOST_LINES` and over `FLOW_LEAST_LINES`;
//! (c) only `PLATFORM_CRATE` names the platform crates, and only its manifest lists them; the
//!     pure crates (`CLOCK_FREE`) never read a clock;
//! (d) neither the origin's nor the operations tools' dependencies name harbour-core or
//!     harbour-worker (they speak to the edge through the contract only), and no `.rs` file in
//!     the repository has a `#[path]` attribute;
//! (e) harbour-core's layers, as the table `CORE_LAYERS` says, and only `CORE_TOP` imports
//!     `CORE_TOP`; a module the table names must exist;
//! (f) each of `ONE_SPELLING` is a string literal exactly once in the non-test code of the
//!     product (every crate but the harness, whose tests spell the wire on purpose).

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::punctuated::Punctuated;
use syn::visit::Visit;
use syn::visit_mut::VisitMut;

/// harbour-core's request-flow function: (module, type, function).
const REQUEST_FLOW: (&str, &str, &str) = ("pipeline", "Pipeline", "flow");
const FLOW_MOST_LINES: usize = 60;
/// A flow this short means the counter did not find its body.
const FLOW_LEAST_LINES: usize = 10;
const MOST_LINES: usize = 120;

/// Inside harbour-core: (module, the modules it must not import). A module is it and its
/// submodules, on either side.
const CORE_LAYERS: &[(&str, &[&str])] = &[
    // The phases are steps over plain data: the composition, the log and the shadow run above.
    ("phase", &["pipeline", "journal", "shadow"]),
    // Read once per isolate, before any request.
    ("config", &["pipeline", "journal", "shadow", "phase"]),
    // The isolate's data points count finished decisions: below the log that writes them.
    ("points", &["phase", "pipeline", "journal", "shadow"]),
    // The vocabulary and the state the phases use, below every phase.
    ("outcome", &["phase"]),
    ("reply", &["phase"]),
    ("limit", &["phase"]),
    ("breaker", &["phase"]),
    ("tickets", &["phase"]),
    ("attempt", &["phase"]),
];
/// The module that composes the phases: nothing else in harbour-core imports it.
const CORE_TOP: &str = "pipeline";
const CORE: &str = "harbour-core";

/// The platform, as code names it and as manifests list it.
const PLATFORM_CRATES: &[&str] = &["wasm_bindgen", "js_sys", "web_sys", "worker"];
const PLATFORM_PACKAGES: &[&str] = &["wasm-bindgen", "js-sys", "web-sys", "worker"];
const PLATFORM_CRATE: &str = "harbour-worker";
/// Time is an input to these.
const CLOCK_FREE: &[&str] = &["harbour-policy", "harbour-contract", "harbour-core"];

const ORIGIN: &str = "harbour-origin";
/// What a campaign team runs: the readiness check, the live view, the broadcast report.
const OPS: &str = "harbour-ops";
const NOT_FOR_THE_ORIGIN: &[&str] = &["harbour-core", "harbour-worker"];

/// The contract's names that must have one spelling in the product.
const ONE_SPELLING: &[&str] = &["x-harbour-signature", "origin_busy", "already_entered"];
/// The test harness: every file of it is test code for rule (f).
const HARNESS: &str = "harbour-e2e";

/// A module's path inside its target: `[]` is the crate root, `["store", "postgres"]`.
type ModPath = Vec<String>;

/// Where something is: a workspace-relative file and a line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Loc {
    file: String,
    line: usize,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A path the code names, resolved: from the module it is written in to the module it lands in.
#[derive(Clone, Debug)]
struct Ref {
    from: ModPath,
    to: ModPath,
    at: Loc,
}

/// One target of a crate (its library, a binary, a harness scenario file).
#[derive(Debug, Default)]
struct Target {
    root: String,
    /// Module → the file its code is in (an inline module is in its parent's file).
    files: BTreeMap<ModPath, String>,
    refs: Vec<Ref>,
}

#[derive(Debug)]
struct Function {
    /// `module::Type::name` or `module::name`.
    name: String,
    module: ModPath,
    owner: Option<String>,
    lines: usize,
    at: Loc,
}

#[derive(Debug)]
struct Crate {
    name: String,
    manifest: toml::Table,
    targets: Vec<Target>,
    functions: Vec<Function>,
    /// Platform crates named in code: (the name, where).
    platform_names: Vec<(String, Loc)>,
    clock_reads: Vec<(String, Loc)>,
    /// String literals of `ONE_SPELLING`: (the value, where).
    literals: Vec<(String, Loc)>,
}

#[derive(Debug)]
struct Workspace {
    manifest: toml::Table,
    crates: Vec<Crate>,
    /// Every `#[path]` attribute in any `.rs` file of the repository.
    path_attributes: Vec<Loc>,
}

fn workspace() -> &'static Workspace {
    static READ: OnceLock<Workspace> = OnceLock::new();
    READ.get_or_init(read_workspace)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn line(span: Span) -> usize {
    span.start().line
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(path: &Path) -> syn::File {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: does not parse: {e}", relative(path)))
}

fn read_workspace() -> Workspace {
    let root = root();
    let manifest = read_toml(&root.join("Cargo.toml"));
    let members: Vec<String> = manifest["workspace"]["members"]
        .as_array()
        .expect("[workspace] members")
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    let crates: Vec<Crate> = members.iter().map(|m| read_crate(&root.join(m))).collect();
    assert!(
        crates.iter().any(|c| c.name == CORE) && crates.iter().any(|c| c.name == ORIGIN),
        "the workspace's members were not read: {members:?}"
    );
    Workspace {
        manifest,
        crates,
        path_attributes: path_attributes(&root),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a crate: its targets' module trees, with test code left out.

/// Whether `attrs` make an item test-only: `#[test]` (or `#[tokio::test]`), `#[cfg(test)]`,
/// `#[cfg(all(test, ...))]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        let path = attr.path();
        if path.segments.last().is_some_and(|s| s.ident == "test") {
            return true;
        }
        path.is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| cfg_is_test(&meta))
    })
}

fn cfg_is_test(meta: &syn::Meta) -> bool {
    match meta {
        syn::Meta::Path(path) => path.is_ident("test"),
        syn::Meta::List(list) if list.path.is_ident("all") => list
            .parse_args_with(Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated)
            .is_ok_and(|all| all.iter().any(cfg_is_test)),
        _ => false,
    }
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Removes test-only items wherever items are: a file, a module, an impl, a trait, a block.
struct StripTests;

impl VisitMut for StripTests {
    fn visit_file_mut(&mut self, file: &mut syn::File) {
        file.items.retain(|item| !is_test(item_attrs(item)));
        syn::visit_mut::visit_file_mut(self, file);
    }

    fn visit_item_mod_mut(&mut self, module: &mut syn::ItemMod) {
        if let Some((_, items)) = &mut module.content {
            items.retain(|item| !is_test(item_attrs(item)));
        }
        syn::visit_mut::visit_item_mod_mut(self, module);
    }

    fn visit_item_impl_mut(&mut self, block: &mut syn::ItemImpl) {
        block.items.retain(|item| match item {
            syn::ImplItem::Fn(f) => !is_test(&f.attrs),
            _ => true,
        });
        syn::visit_mut::visit_item_impl_mut(self, block);
    }

    fn visit_block_mut(&mut self, block: &mut syn::Block) {
        block
            .stmts
            .retain(|stmt| !matches!(stmt, syn::Stmt::Item(item) if is_test(item_attrs(item))));
        syn::visit_mut::visit_block_mut(self, block);
    }
}

/// What resolving a path needs of a module: the items it defines, the names it imports, its
/// glob imports.
#[derive(Debug, Default)]
struct Scope {
    defines: BTreeSet<String>,
    uses: BTreeMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
}

/// A target's modules, as read: each module's file and scope, and each file's tree.
#[derive(Default)]
struct Tree {
    scopes: BTreeMap<ModPath, Scope>,
    files: BTreeMap<ModPath, PathBuf>,
    /// (the module a file starts, the file, its tree without tests)
    parsed: Vec<(ModPath, PathBuf, syn::File)>,
}

/// Every path a `use` tree imports: (the name it binds, the path), and the glob prefixes.
fn flatten_use(
    tree: &syn::UseTree,
    prefix: &[String],
    out: &mut Vec<(String, Vec<String>)>,
    globs: &mut Vec<Vec<String>>,
) {
    let with = |ident: &syn::Ident| [prefix, &[ident.to_string()]].concat();
    match tree {
        syn::UseTree::Path(p) => flatten_use(&p.tree, &with(&p.ident), out, globs),
        syn::UseTree::Name(n) if n.ident == "self" => {
            if let Some(last) = prefix.last() {
                out.push((last.clone(), prefix.to_vec()));
            }
        }
        syn::UseTree::Name(n) => out.push((n.ident.to_string(), with(&n.ident))),
        syn::UseTree::Rename(r) => out.push((r.rename.to_string(), with(&r.ident))),
        syn::UseTree::Glob(_) => globs.push(prefix.to_vec()),
        syn::UseTree::Group(g) => g
            .items
            .iter()
            .for_each(|item| flatten_use(item, prefix, out, globs)),
    }
}

fn item_name(item: &syn::Item) -> Option<String> {
    use syn::Item::*;
    let ident = match item {
        Const(i) => &i.ident,
        Enum(i) => &i.ident,
        Fn(i) => &i.sig.ident,
        Mod(i) => &i.ident,
        Static(i) => &i.ident,
        Struct(i) => &i.ident,
        Trait(i) => &i.ident,
        Type(i) => &i.ident,
        Union(i) => &i.ident,
        Macro(i) => i.ident.as_ref()?,
        _ => return None,
    };
    Some(ident.to_string())
}

impl Tree {
    /// Reads the module `path` from `file` and, through its `mod` declarations, every module
    /// under it. `dir` is where its children's files are.
    fn load_file(&mut self, path: ModPath, file: &Path, dir: &Path) {
        let mut syntax = parse(file);
        StripTests.visit_file_mut(&mut syntax);
        self.load_items(&path, &syntax.items, file, dir);
        self.parsed.push((path, file.to_path_buf(), syntax));
    }

    fn load_items(&mut self, path: &ModPath, items: &[syn::Item], file: &Path, dir: &Path) {
        self.files.insert(path.clone(), file.to_path_buf());
        let mut scope = Scope::default();
        for item in items {
            scope.defines.extend(item_name(item));
            if let syn::Item::Use(u) = item {
                let mut uses = Vec::new();
                flatten_use(&u.tree, &[], &mut uses, &mut scope.globs);
                scope.uses.extend(uses);
            }
            let syn::Item::Mod(module) = item else {
                continue;
            };
            let child = [path.as_slice(), &[module.ident.to_string()]].concat();
            let child_dir = dir.join(module.ident.to_string());
            match &module.content {
                Some((_, inner)) => self.load_items(&child, inner, file, &child_dir),
                None => {
                    let name = module.ident.to_string();
                    let flat = dir.join(format!("{name}.rs"));
                    let nested = dir.join(&name).join("mod.rs");
                    let found = if flat.is_file() { flat } else { nested };
                    assert!(
                        found.is_file(),
                        "{}: `mod {name};` has no file",
                        relative(file)
                    );
                    self.load_file(child, &found, &child_dir);
                }
            }
        }
        self.scopes.insert(path.clone(), scope);
    }

    fn has(&self, path: &[String]) -> bool {
        self.scopes.contains_key(path)
    }
}

/// The roots of a crate's targets: its library, its binaries, and for the harness its scenario
/// and test files.
fn target_roots(dir: &Path, name: &str) -> Vec<PathBuf> {
    let src = dir.join("src");
    let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .filter(|p| p.is_file())
        .collect();
    let listed = |dir: PathBuf| -> Vec<PathBuf> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        entries.sort();
        entries
    };
    for entry in listed(src.join("bin")) {
        if entry.extension().is_some_and(|e| e == "rs") {
            roots.push(entry);
        } else if entry.join("main.rs").is_file() {
            roots.push(entry.join("main.rs"));
        }
    }
    if name == HARNESS {
        let tests = listed(dir.join("tests"));
        roots.extend(
            tests
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "rs")),
        );
    }
    roots
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let skipped = [
            "target",
            "node_modules",
            ".git",
            "build",
            "proptest-regressions",
        ];
        if path.is_dir() && !skipped.iter().any(|s| path.ends_with(s)) {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn read_crate(dir: &Path) -> Crate {
    let manifest = read_toml(&dir.join("Cargo.toml"));
    let name = manifest["package"]["name"].as_str().unwrap().to_owned();
    let mut krate = Crate {
        name: name.clone(),
        manifest,
        targets: Vec::new(),
        functions: Vec::new(),
        platform_names: Vec::new(),
        clock_reads: Vec::new(),
        literals: Vec::new(),
    };
    let mut read_files = BTreeSet::new();
    for root_file in target_roots(dir, &name) {
        let mut tree = Tree::default();
        tree.load_file(Vec::new(), &root_file, root_file.parent().unwrap());
        krate.targets.push(target_facts(&tree, &root_file));
        for (module, file, syntax) in &tree.parsed {
            if read_files.insert(file.clone()) {
                file_facts(&mut krate, module, &relative(file), syntax);
            }
        }
    }
    let mut sources = Vec::new();
    rust_files(&dir.join("src"), &mut sources);
    for source in sources {
        assert!(
            read_files.contains(&source),
            "{} is not a module of any target of {name}: the shape rules would not see it",
            relative(&source)
        );
    }
    krate
}

// ---------------------------------------------------------------------------------------------
// The paths a target's code names, resolved to the modules they land in.

/// Collects (module written in, path segments, line) of every path in a file's code.
struct Paths {
    module: ModPath,
    found: Vec<(ModPath, Vec<String>, usize)>,
}

impl Paths {
    fn note(&mut self, segments: Vec<String>, line: usize) {
        if segments.len() > 1 || segments.first().is_some_and(|s| s == "self") {
            self.found.push((self.module.clone(), segments, line));
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        if let Some((_, items)) = &module.content {
            self.module.push(module.ident.to_string());
            items.iter().for_each(|item| self.visit_item(item));
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let (mut uses, mut globs) = (Vec::new(), Vec::new());
        flatten_use(&item.tree, &[], &mut uses, &mut globs);
        let at = line(item.use_token.span);
        for path in uses.into_iter().map(|(_, p)| p).chain(globs) {
            // A bare `use x;` names x, resolved as a module path.
            self.found.push((self.module.clone(), path, at));
        }
    }

    // `pub(in crate::a)` says who may see an item; it uses nothing of `a`.
    fn visit_vis_restricted(&mut self, _: &'ast syn::VisRestricted) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.note(segments, line(path.segments[0].ident.span()));
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        // Macro arguments are tokens: every `a::b::c` run in them.
        let tokens: Vec<TokenTree> = mac.tokens.clone().into_iter().collect();
        for (segments, at) in path_runs(&tokens) {
            self.note(segments, at);
        }
    }
}

/// Every `ident (:: ident)+` run in `tokens` (and the groups inside), not preceded by `::`.
fn path_runs(tokens: &[TokenTree]) -> Vec<(Vec<String>, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let TokenTree::Group(group) = &tokens[i] {
            let inner: Vec<TokenTree> = group.stream().into_iter().collect();
            runs.extend(path_runs(&inner));
        }
        let starts = matches!(&tokens[i], TokenTree::Ident(_)) && !after_colons(tokens, i);
        if !starts {
            i += 1;
            continue;
        }
        let mut segments = Vec::new();
        let at = line(tokens[i].span());
        while let Some(TokenTree::Ident(ident)) = tokens.get(i) {
            segments.push(ident.to_string());
            if colons_at(tokens, i + 1) {
                i += 3;
            } else {
                i += 1;
                break;
            }
        }
        if segments.len() > 1 {
            runs.push((segments, at));
        }
    }
    runs
}

fn colons_at(tokens: &[TokenTree], i: usize) -> bool {
    let colon =
        |t: Option<&TokenTree>| matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == ':');
    colon(tokens.get(i)) && colon(tokens.get(i + 1))
}

fn after_colons(tokens: &[TokenTree], i: usize) -> bool {
    i >= 2 && colons_at(tokens, i - 2)
}

/// Where `segments`, written in module `from`, lands: a module of the target, or `None` for
/// another crate, a local name or anything else outside the target.
fn resolve(tree: &Tree, from: &[String], segments: &[String], depth: usize) -> Option<ModPath> {
    let first = segments.first()?;
    if depth > 8 {
        return None;
    }
    let supers = segments.iter().take_while(|s| *s == "super").count();
    let (base, rest): (ModPath, &[String]) = match first.as_str() {
        "crate" => (Vec::new(), &segments[1..]),
        "self" => (from.to_vec(), &segments[1..]),
        "super" => (
            from[..from.len().checked_sub(supers)?].to_vec(),
            &segments[supers..],
        ),
        name if tree.has(&[from, &[name.to_owned()]].concat()) => (from.to_vec(), segments),
        _ => return None,
    };
    descend(tree, base, rest, depth)
}

/// From module `at`, follows `rest` through submodules, then to where the item it names is
/// defined (through `use` and glob re-exports).
fn descend(tree: &Tree, mut at: ModPath, rest: &[String], depth: usize) -> Option<ModPath> {
    for (i, segment) in rest.iter().enumerate() {
        let child = [at.as_slice(), std::slice::from_ref(segment)].concat();
        if tree.has(&child) {
            at = child;
            continue;
        }
        let scope = &tree.scopes[&at];
        if scope.defines.contains(segment) {
            return Some(at);
        }
        if let Some(imported) = scope.uses.get(segment) {
            let onward = [imported.as_slice(), &rest[i + 1..]].concat();
            return resolve(tree, &at, &onward, depth + 1);
        }
        for glob in &scope.globs {
            let Some(module) = resolve(tree, &at, glob, depth + 1) else {
                continue;
            };
            let there = &tree.scopes[&module];
            let child = [module.as_slice(), std::slice::from_ref(segment)].concat();
            if there.defines.contains(segment)
                || there.uses.contains_key(segment)
                || tree.has(&child)
            {
                return descend(tree, module, &rest[i..], depth + 1);
            }
        }
        return Some(at);
    }
    Some(at)
}

fn target_facts(tree: &Tree, root_file: &Path) -> Target {
    let mut target = Target {
        root: relative(root_file),
        files: tree
            .files
            .iter()
            .map(|(m, f)| (m.clone(), relative(f)))
            .collect(),
        refs: Vec::new(),
    };
    for (module, file, syntax) in &tree.parsed {
        let mut paths = Paths {
            module: module.clone(),
            found: Vec::new(),
        };
        paths.visit_file(syntax);
        for (from, segments, line) in paths.found {
            if let Some(to) = resolve(tree, &from, &segments, 0) {
                let at = Loc {
                    file: relative(file),
                    line,
                };
                target.refs.push(Ref { from, to, at });
            }
        }
    }
    target
}

// ---------------------------------------------------------------------------------------------
// Functions and tokens of a file.

/// Every function with a body, with its length from the `fn` line to the closing brace.
struct Functions<'a> {
    file: &'a str,
    module: ModPath,
    owner: Option<String>,
    found: Vec<Function>,
}

impl Functions<'_> {
    fn note(&mut self, ident: &syn::Ident, fn_token: Span, block: &syn::Block) {
        let (start, end) = (line(fn_token), block.brace_token.span.close().end().line);
        let mut name: Vec<String> = self.module.clone();
        name.extend(self.owner.clone());
        name.push(ident.to_string());
        self.found.push(Function {
            name: name.join("::"),
            module: self.module.clone(),
            owner: self.owner.clone(),
            lines: end - start + 1,
            at: Loc {
                file: self.file.to_owned(),
                line: start,
            },
        });
    }
}

impl<'ast> Visit<'ast> for Functions<'_> {
    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        if let Some((_, items)) = &module.content {
            self.module.push(module.ident.to_string());
            items.iter().for_each(|item| self.visit_item(item));
            self.module.pop();
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.note(&f.sig.ident, f.sig.fn_token.span, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_item_impl(&mut self, block: &'ast syn::ItemImpl) {
        let owner = match &*block.self_ty {
            syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        };
        let outer = std::mem::replace(&mut self.owner, owner);
        syn::visit::visit_item_impl(self, block);
        self.owner = outer;
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.note(&f.sig.ident, f.sig.fn_token.span, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        let outer = self.owner.replace(t.ident.to_string());
        syn::visit::visit_item_trait(self, t);
        self.owner = outer;
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.note(&f.sig.ident, f.sig.fn_token.span, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// The tokens of `stream` in order, groups opened, doc attributes (comments) left out.
fn flat_tokens(stream: TokenStream, out: &mut Vec<TokenTree>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        let is_hash = matches!(&tokens[i], TokenTree::Punct(p) if p.as_char() == '#');
        let bang = usize::from(
            matches!(tokens.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == '!'),
        );
        if is_hash {
            if let Some(TokenTree::Group(g)) = tokens.get(i + 1 + bang) {
                let doc = matches!(g.stream().into_iter().next(), Some(TokenTree::Ident(id)) if id == "doc");
                if g.delimiter() == Delimiter::Bracket && doc {
                    i += 2 + bang;
                    continue;
                }
            }
        }
        match &tokens[i] {
            TokenTree::Group(g) => flat_tokens(g.stream(), out),
            other => out.push(other.clone()),
        }
        i += 1;
    }
}

fn ident_is(token: Option<&TokenTree>, name: &str) -> bool {
    matches!(token, Some(TokenTree::Ident(id)) if id == name)
}

/// Platform crates named, clocks read and `ONE_SPELLING` literals, in a file's tokens.
fn scan_tokens(krate: &mut Crate, file: &str, tokens: &[TokenTree]) {
    let loc = |t: &TokenTree| Loc {
        file: file.to_owned(),
        line: line(t.span()),
    };
    for (i, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Ident(id) => {
                let name = id.to_string();
                let path_start = colons_at(tokens, i + 1) && !after_colons(tokens, i);
                let imported = ident_is(i.checked_sub(1).and_then(|j| tokens.get(j)), "use")
                    || ident_is(i.checked_sub(1).and_then(|j| tokens.get(j)), "crate");
                let platform = match name.as_str() {
                    "worker" => path_start || imported,
                    other => PLATFORM_CRATES.contains(&other),
                };
                if platform {
                    krate.platform_names.push((name.clone(), loc(token)));
                }
                if name == "SystemTime"
                    || (name == "Instant"
                        && colons_at(tokens, i + 1)
                        && ident_is(tokens.get(i + 3), "now"))
                {
                    krate.clock_reads.push((name, loc(token)));
                }
            }
            TokenTree::Literal(literal) => {
                if let syn::Lit::Str(s) = syn::Lit::new(literal.clone()) {
                    if ONE_SPELLING.contains(&s.value().as_str()) {
                        krate.literals.push((s.value(), loc(token)));
                    }
                }
            }
            _ => {}
        }
    }
}

fn file_facts(krate: &mut Crate, module: &ModPath, file: &str, syntax: &syn::File) {
    let mut functions = Functions {
        file,
        module: module.clone(),
        owner: None,
        found: Vec::new(),
    };
    functions.visit_file(syntax);
    krate.functions.extend(functions.found);
    let mut tokens = Vec::new();
    flat_tokens(syntax.to_token_stream(), &mut tokens);
    scan_tokens(krate, file, &tokens);
}

/// Every `#[path]` attribute in the repository's `.rs` files, test code included.
fn path_attributes(root: &Path) -> Vec<Loc> {
    struct Attributes<'a>(&'a str, Vec<Loc>);
    impl<'ast> Visit<'ast> for Attributes<'_> {
        fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
            if attr.path().is_ident("path") {
                let at = Loc {
                    file: self.0.to_owned(),
                    line: line(attr.pound_token.span),
                };
                self.1.push(at);
            }
        }
    }
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut found = Vec::new();
    for file in files {
        let name = relative(&file);
        let mut attributes = Attributes(&name, Vec::new());
        attributes.visit_file(&parse(&file));
        found.extend(attributes.1);
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Manifests.

/// Every dependency a manifest lists, of every kind and target: (the table, the name it is
/// listed under, the package it is).
fn dependencies(manifest: &toml::Table) -> Vec<(String, String, String)> {
    let mut tables: Vec<(String, &toml::Value)> = Vec::new();
    for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
        tables.extend(manifest.get(kind).map(|t| (kind.to_owned(), t)));
        for (cfg, target) in manifest
            .get("target")
            .and_then(|t| t.as_table())
            .into_iter()
            .flatten()
        {
            tables.extend(
                target
                    .get(kind)
                    .map(|t| (format!("target.{cfg}.{kind}"), t)),
            );
        }
    }
    if let Some(workspace) = manifest.get("workspace") {
        tables.extend(
            workspace
                .get("dependencies")
                .map(|t| ("workspace.dependencies".to_owned(), t)),
        );
    }
    let mut listed = Vec::new();
    for (table, deps) in tables {
        for (name, spec) in deps.as_table().into_iter().flatten() {
            let package = spec.get("package").and_then(|p| p.as_str()).unwrap_or(name);
            listed.push((table.clone(), name.clone(), package.to_owned()));
        }
    }
    listed
}

// ---------------------------------------------------------------------------------------------
// The rules.

fn krate(name: &str) -> &'static Crate {
    workspace()
        .crates
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no crate {name} in the workspace"))
}

/// The file-module graph of a target: file → (file it imports → where, first seen).
fn file_graph(target: &Target) -> BTreeMap<&str, BTreeMap<&str, &Loc>> {
    let mut graph: BTreeMap<&str, BTreeMap<&str, &Loc>> = BTreeMap::new();
    for file in target.files.values() {
        graph.entry(file).or_default();
    }
    for r in &target.refs {
        let (from, to) = (&target.files[&r.from], &target.files[&r.to]);
        if from != to {
            graph.entry(from).or_default().entry(to).or_insert(&r.at);
        }
    }
    graph
}

/// Every cycle of `graph`, one per group of files that import one another (a strongly connected
/// component), shown as one loop through it with the line of each import.
fn cycles(graph: &BTreeMap<&str, BTreeMap<&str, &Loc>>) -> Vec<String> {
    // Two files are in one group when each reaches the other.
    let reach = |from: &str| {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from]);
        while let Some(file) = todo.pop() {
            for next in graph[file].keys() {
                if seen.insert(*next) {
                    todo.push(next);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&str, BTreeSet<&str>> = graph.keys().map(|f| (*f, reach(f))).collect();
    let mut shown = BTreeSet::new();
    let mut found = Vec::new();
    for (file, reached) in &reaches {
        if !reached.contains(file) || shown.contains(file) {
            continue;
        }
        let group: BTreeSet<&str> = reached
            .iter()
            .filter(|other| reaches[*other].contains(file))
            .copied()
            .collect();
        shown.extend(group.iter().copied());
        found.push(loop_through(graph, file, &group));
    }
    found
}

/// A shortest loop from `start` back to it inside `group`, with the line of each import.
fn loop_through(
    graph: &BTreeMap<&str, BTreeMap<&str, &Loc>>,
    start: &str,
    group: &BTreeSet<&str>,
) -> String {
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    'search: while let Some(file) = queue.pop_front() {
        for next in graph[file].keys().filter(|n| group.contains(*n)) {
            if *next == start {
                previous.insert(start, file);
                break 'search;
            }
            if !previous.contains_key(next) {
                previous.insert(next, file);
                queue.push_back(next);
            }
        }
    }
    let mut files = vec![start];
    let mut at = previous[start];
    while at != start {
        files.push(at);
        at = previous[at];
    }
    files.push(start);
    files.reverse();
    let steps: Vec<String> = files
        .windows(2)
        .map(|w| format!("{} (line {})", w[0], graph[w[0]][w[1]].line))
        .collect();
    let others: Vec<&str> = group
        .iter()
        .filter(|f| !files.contains(f))
        .copied()
        .collect();
    let also = if others.is_empty() {
        String::new()
    } else {
        format!(" (with {} in the same loop)", others.join(", "))
    };
    format!("{} -> {start}{also}", steps.join(" -> "))
}

#[test]
fn modules_import_each_other_without_a_cycle_in_any_crate() {
    let mut found = Vec::new();
    for krate in &workspace().crates {
        for target in &krate.targets {
            for cycle in cycles(&file_graph(target)) {
                found.push(format!("{} ({}): {cycle}", krate.name, target.root));
            }
        }
    }
    assert!(found.is_empty(), "module cycles:\n  {}", found.join("\n  "));
    // The reader resolved paths: harbour-core's modules import one another.
    let core = krate(CORE);
    let edges: usize = file_graph(&core.targets[0])
        .values()
        .map(BTreeMap::len)
        .sum();
    assert!(
        edges >= 10,
        "harbour-core has {edges} imports between its files"
    );
}

#[test]
fn functions_stay_short_and_the_request_flow_reads_on_one_screen() {
    let mut long = Vec::new();
    for krate in &workspace().crates {
        for f in krate.functions.iter().filter(|f| f.lines > MOST_LINES) {
            long.push(format!(
                "{} {} at {} ({} lines)",
                krate.name, f.name, f.at, f.lines
            ));
        }
    }
    assert!(
        long.is_empty(),
        "over {MOST_LINES} lines:\n  {}",
        long.join("\n  ")
    );
    let (module, owner, name) = REQUEST_FLOW;
    let flow = krate(CORE)
        .functions
        .iter()
        .find(|f| {
            f.module == [module] && f.owner.as_deref() == Some(owner) && f.name.ends_with(&format!("::{name}"))
        })
        .unwrap_or_else(|| {
            panic!("harbour-core has no {module}::{owner}::{name}: set REQUEST_FLOW to the request-flow function")
        });
    assert!(
        flow.lines < FLOW_MOST_LINES,
        "{} has {} lines",
        flow.name,
        flow.lines
    );
    assert!(
        flow.lines > FLOW_LEAST_LINES,
        "{} has {} lines: the counter missed its body",
        flow.name,
        flow.lines
    );
}

#[test]
fn only_the_worker_crate_names_the_platform_and_the_pure_crates_read_no_clock() {
    let ws = workspace();
    let mut found = Vec::new();
    for krate in ws.crates.iter().filter(|c| c.name != PLATFORM_CRATE) {
        for (name, at) in &krate.platform_names {
            found.push(format!("{} names {name} at {at}", krate.name));
        }
        for (table, listed, package) in dependencies(&krate.manifest) {
            if PLATFORM_PACKAGES.contains(&package.as_str()) {
                found.push(format!(
                    "{}'s Cargo.toml lists {listed} in [{table}]",
                    krate.name
                ));
            }
        }
    }
    for (table, listed, package) in dependencies(&ws.manifest) {
        if PLATFORM_PACKAGES.contains(&package.as_str()) {
            found.push(format!(
                "the workspace's Cargo.toml lists {listed} in [{table}]"
            ));
        }
    }
    for name in CLOCK_FREE {
        for (clock, at) in &krate(name).clock_reads {
            found.push(format!(
                "{name} reads a clock ({clock}) at {at}: time is an input"
            ));
        }
    }
    assert!(found.is_empty(), "\n  {}", found.join("\n  "));
    // The scan sees what it looks for: the worker does name the platform.
    assert!(
        !krate(PLATFORM_CRATE).platform_names.is_empty(),
        "no platform name found in {PLATFORM_CRATE}"
    );
}

#[test]
fn the_origin_and_the_ops_tools_depend_on_neither_core_nor_worker_and_no_file_has_a_path_attribute()
{
    let ws = workspace();
    let mut found = Vec::new();
    for name in [ORIGIN, OPS] {
        for (table, listed, package) in dependencies(&krate(name).manifest) {
            let normal = table == "dependencies"
                || (table.starts_with("target.") && table.ends_with(".dependencies"));
            if normal && NOT_FOR_THE_ORIGIN.contains(&package.as_str()) {
                found.push(format!("{name}'s Cargo.toml lists {listed} in [{table}]"));
            }
        }
    }
    for at in &ws.path_attributes {
        found.push(format!(
            "#[path] at {at}: a module's file is where its name says"
        ));
    }
    assert!(found.is_empty(), "\n  {}", found.join("\n  "));
}

/// harbour-core's imports between its top-level modules: (from, to, where), `lib` for the root.
fn core_imports() -> Vec<(String, String, &'static Loc)> {
    let top = |m: &ModPath| m.first().cloned().unwrap_or_else(|| "lib".into());
    krate(CORE).targets[0]
        .refs
        .iter()
        .map(|r| (top(&r.from), top(&r.to), &r.at))
        .filter(|(from, to, _)| from != to)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn harbour_core_keeps_its_layers() {
    let modules: BTreeSet<String> = krate(CORE).targets[0]
        .files
        .keys()
        .filter_map(|m| m.first().cloned())
        .collect();
    let named = CORE_LAYERS
        .iter()
        .flat_map(|(m, forbidden)| std::iter::once(m).chain(forbidden.iter()))
        .chain([&CORE_TOP]);
    for module in named {
        assert!(
            modules.contains(*module),
            "CORE_LAYERS or CORE_TOP names {module}, which harbour-core does not have (it has {modules:?}): keep the table in step with the code"
        );
    }
    let mut broken = Vec::new();
    for (from, to, at) in core_imports() {
        let forbidden = CORE_LAYERS
            .iter()
            .any(|(m, not)| *m == from && not.contains(&to.as_str()));
        if forbidden || (to == CORE_TOP && from != CORE_TOP) {
            broken.push(format!("{from} imports {to} at {at}"));
        }
    }
    assert!(
        broken.is_empty(),
        "harbour-core's layers:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn each_contract_literal_is_spelled_once_in_the_product() {
    let mut wrong = Vec::new();
    for literal in ONE_SPELLING {
        let places: Vec<String> = workspace()
            .crates
            .iter()
            .filter(|c| c.name != HARNESS)
            .flat_map(|c| c.literals.iter().map(move |(v, at)| (c, v, at)))
            .filter(|(_, v, _)| v == literal)
            .map(|(c, _, at)| format!("{} ({at})", c.name))
            .collect();
        if places.len() != 1 {
            wrong.push(format!(
                "\"{literal}\" is a string literal {} times: {places:?}",
                places.len()
            ));
        }
    }
    assert!(wrong.is_empty(), "\n  {}", wrong.join("\n  "));
}
