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
