//! The embedded MQTT broker (rumqttd), so that a building's plugs and sub-meters need no broker
//! of their own: devices and the gateway's own `[[mqtt_source]]` connect to it.
//!
//! Authentication is always on: every client must log in with a user of `[mqtt_broker].users`.
//! rumqttd has no shutdown: the broker runs on its own OS thread for the rest of the process,
//! and a second broker on the same address in one process cannot be started. Its per-connection
//! INFO logs are left to the log filter (`rumqttd=warn` is a sensible default).

use std::collections::HashMap;
use std::net::TcpListener;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::error;

use crate::config::mqtt::EmbeddedBroker;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("mqtt_broker: cannot listen on {listen}: {source}")]
    Listen {
        listen: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("mqtt_broker: cannot start its thread: {0}")]
    Thread(std::io::Error),
}

/// The rumqttd configuration of `broker`: one MQTT 3.1.1 listener with static users.
pub fn rumqttd_config(broker: &EmbeddedBroker) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: broker.max_payload_bytes,
        max_inflight_count: 100,
        auth: Some(
            broker
                .users
                .iter()
                .map(|(u, p)| (u.clone(), p.clone()))
                .collect(),
        ),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "v4-1".to_owned(),
        listen: broker.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: broker.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 << 20,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4-1".to_owned(), server)])),
        ..Config::default()
    }
}

/// Starts the broker on its own thread. The listen address is checked first (rumqttd would only
/// log a failed bind from its thread), so a taken port is an error here.
pub fn start(broker: &EmbeddedBroker) -> Result<(), BrokerError> {
    drop(
        TcpListener::bind(broker.listen).map_err(|source| BrokerError::Listen {
            listen: broker.listen,
            source,
        })?,
    );
    let config = rumqttd_config(broker);
    let listen = broker.listen;
    std::thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            let mut b = Broker::new(config);
            if let Err(e) = b.start() {
                error!(%listen, error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(())
}
