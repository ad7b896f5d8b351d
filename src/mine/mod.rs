//! Data mining over a pool, from what it already holds (docs/mining.md): related tags
//! so far.

pub mod related;
