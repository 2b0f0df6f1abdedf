//! The README's "Add an architecture in one file" shows exactly the code that
//! `tests/tests/worked_example.rs` compiles and runs (through `docs/add-an-architecture.md`,
//! which that test checks).

fn rust_block(text: &str) -> &str {
    let start = text.find("```rust\n").expect("a ```rust block") + "```rust\n".len();
    let end = start + text[start..].find("```").expect("the block's end");
    &text[start..end]
}

#[test]
fn readme_shows_the_worked_example_unchanged() {
    let readme = include_str!("../../README.md");
    let doc = include_str!("../../docs/add-an-architecture.md");
    let code = rust_block(doc);
    assert!(
        code.contains("#[mlx_model("),
        "the doc's first rust block is the example"
    );
    assert!(
        readme.contains("## Add an architecture in one file"),
        "README lacks the section"
    );
    assert!(
        readme.contains(&format!("```rust\n{code}```")),
        "README's example differs from docs/add-an-architecture.md"
    );
}

/// The README's "Use it from your crate" is `docs/use-from-your-crate.md` verbatim, and that
/// page's code is a doctest of the zoo (so the README's code compiles).
#[test]
fn readme_shows_the_use_from_your_crate_page_unchanged() {
    let readme = include_str!("../../README.md");
    let doc = include_str!("../../docs/use-from-your-crate.md");
    assert!(
        doc.starts_with("## Use it from your crate\n"),
        "the page is the README section, heading included"
    );
    assert!(
        readme.contains(doc),
        "README's \"Use it from your crate\" differs from docs/use-from-your-crate.md"
    );
    let code = rust_block_after(doc, "```rust,no_run\n");
    assert!(
        code.contains("mlx_models_zoo::link()") && code.contains("llama::Model::new(&args)"),
        "the page's code loads through the registry and builds from typed args"
    );
    let zoo = include_str!("../../models/src/lib.rs");
    assert!(
        zoo.contains("#[doc = include_str!(\"../../docs/use-from-your-crate.md\")]"),
        "the zoo no longer compiles the page as a doctest"
    );
    let example = include_str!("../../examples/downstream/Cargo.toml");
    assert!(
        example.contains("[patch.crates-io]\nmlx-sys = { path = \"../../mlx-sys\" }"),
        "the example crate lacks the patch line the page tells users to add"
    );
}

fn rust_block_after<'a>(text: &'a str, fence: &str) -> &'a str {
    let start = text.find(fence).expect("a rust block") + fence.len();
    let end = start + text[start..].find("```").expect("the block's end");
    &text[start..end]
}

const TABLE_START: &str = "<!-- architectures: generated from the registry by tests/tests/readme.rs; MLX_MODELS_UPDATE_README=1 rewrites it -->\n";
const TABLE_END: &str = "<!-- architectures: end -->";

/// `COVERS = "..."` of a case script: what its cases cover, in a few words.
fn covers(script: &str) -> Option<String> {
    let line = script.lines().find(|l| l.starts_with("COVERS = \""))?;
    let text = line.strip_prefix("COVERS = \"")?.strip_suffix('"')?;
    Some(text.replace("\\\"", "\""))
}

/// The README's architecture table is made from the registry (every `model_type` and its
/// aliases), the parity fixtures (the number of cases) and each case script's `COVERS`: a new
/// architecture appears in it without anyone writing a row. Run with
/// `MLX_MODELS_UPDATE_README=1` to rewrite the table after adding one.
#[test]
fn readme_architecture_table_is_the_registry() {
    mlx_models_zoo::link();
    let root = mlx_models_tests::reference::repo_root();
    let mut entries = mlx_models::registry::entries();
    entries.sort_by_key(|e| e.model_type);
    let mut table = String::from(
        "| `model_type` (aliases) | cases | what the cases cover |\n| --- | --- | --- |\n",
    );
    for e in &entries {
        let script_path = root.join(format!("scripts/reference/parity/{}.py", e.model_type));
        let script = std::fs::read_to_string(&script_path)
            .unwrap_or_else(|err| panic!("{}: {err}", script_path.display()));
        let covers = covers(&script)
            .unwrap_or_else(|| panic!("{} has no `COVERS = \"...\"` line", script_path.display()));
        let cases = mlx_models_tests::parity::cases(e.model_type).len();
        let name = if e.aliases.is_empty() {
            format!("`{}`", e.model_type)
        } else {
            let aliases: Vec<String> = e.aliases.iter().map(|a| format!("`{a}`")).collect();
            format!("`{}` ({})", e.model_type, aliases.join(", "))
        };
        table.push_str(&format!("| {name} | {cases} | {covers} |\n"));
    }
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let start = readme.find(TABLE_START).expect("the table's start marker") + TABLE_START.len();
    let end = readme.find(TABLE_END).expect("the table's end marker");
    if readme[start..end] == table {
        return;
    }
    if std::env::var_os("MLX_MODELS_UPDATE_README").is_some() {
        let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
        std::fs::write(&readme_path, updated).expect("write README.md");
        return;
    }
    panic!(
        "README.md's architecture table is out of date; run the test with MLX_MODELS_UPDATE_README=1, or write:\n{table}"
    );
}
