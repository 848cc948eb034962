//! Benchmarks for switchyard. The criterion micro-benchmarks and the end-to-end script live here;
//! this crate is the home for shared benchmark fixtures.
