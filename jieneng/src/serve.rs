//! `jieneng serve`: ingest's write path and the read API on one listener. The composition lives
//! here, not in either crate, so that neither service depends on the other: ingest takes the
//! read API's routes as an opaque router, the read API takes ingest's acknowledged rows as
//! `storage::LiveReadings`, and both count refusals into one `Rejects`.

use std::sync::Arc;

use http_contract::Rejects;
use ingest::{Server, ServerHandle};

use crate::config::ServeConfig;

/// Opens the store, binds the listener and serves the batch API, the read API and the
/// dashboard.
pub async fn start(config: &ServeConfig) -> anyhow::Result<ServerHandle> {
    let rejects = Arc::new(Rejects::default());
    let api_config = config.api();
    let api_rejects = rejects.clone();
    Server::start_with(&config.ingest(), rejects, move |live| {
        let api = api::Api::new(&api_config, Some(live), api_rejects)?;
        Ok(api::router(Arc::new(api)).merge(api::assets::router()))
    })
    .await
}
