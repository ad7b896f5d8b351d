//! seedpool: publish datasets as torrents of content-addressed shards with signed,
//! incremental release manifests, and merge releases into a local pool that can be
//! queried. The binary is a thin layer over these modules, so tests and benchmarks use
//! the same code as the CLI.

pub mod cli;
pub mod demo;
pub mod detect;
pub mod index;
pub mod ingest;
pub mod manifest;
pub mod name;
pub mod pool;
pub mod progress;
pub mod publish;
pub mod query;
pub mod release;
pub mod shard;
pub mod signing;
pub mod store;
pub mod swarm;
pub mod tags;
pub mod torrent;
pub mod verify;
pub mod zseek;
