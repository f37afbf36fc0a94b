//! Without the `download` feature (off by default) tests/data_download.rs
//! compiles to nothing; this stands in its place so that the test output
//! says so and how to run them.
#![cfg(not(feature = "download"))]

#[test]
#[ignore = "tests/data_download.rs needs the `download` feature: \
            cargo test --features download"]
fn download_tests_need_the_download_feature() {}
