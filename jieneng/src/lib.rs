//! The `jieneng` binary's library: the server file ([`config`]) and the composition of ingest's
//! write path with the read API ([`serve`]). The binary (`src/main.rs`) adds the commands
//! (`serve`, `demo`, `report`, `token-hash`); tests start the same composed server.

pub mod config;
pub mod serve;
