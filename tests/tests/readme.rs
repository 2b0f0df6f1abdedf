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
