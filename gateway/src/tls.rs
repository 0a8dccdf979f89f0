//! The process's TLS: one crypto provider (rustls' ring) for every client the gateway builds,
//! the forwarder's (HTTPS, MQTT) and the MQTT source's alike.

/// Installs rustls' ring provider for this process. reqwest and rumqttc are built without a provider
/// of their own (their default one is aws-lc, a C build), so one must be installed before any client is
/// built; a second call is harmless.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
