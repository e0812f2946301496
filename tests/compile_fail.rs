//! What the compiler says when a process's target, its return type or its arguments do not
//! fit (issue 13, point 3): the messages of `Target`, `Outcome` and `Args`, pinned as trybuild
//! cases in `tests/ui/` (regenerate the `.stderr` files with `TRYBUILD=overwrite`).

#[test]
fn target_outcome_and_args_messages() {
    // The failing cases on their own, so that trybuild type-checks them (`cargo check`): each
    // must fail there, not only when the crate is built.
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
    // Then what must keep compiling, built and run: fn items and closures without captures.
    trybuild::TestCases::new().pass("tests/ui/pass/*.rs");
}
