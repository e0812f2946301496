//! What the compiler says about a `#[multiprocess::managed]` trait it cannot share: types that
//! are not serde types, and signatures the macro refuses (issue 15, point 1), pinned as
//! trybuild cases in `tests/ui_managed/` (regenerate the `.stderr` files with
//! `TRYBUILD=overwrite`). Each fails at `cargo check`.

#[test]
fn managed_trait_messages() {
    trybuild::TestCases::new().compile_fail("tests/ui_managed/*.rs");
}
