//! The `/metrics` flags of the long-running commands (`run`, `node`, `operator`).

use super::CliError;
use std::io::Write;
use std::path::PathBuf;

/// Where and how to serve `/metrics`.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics with upstream's names at `ADDR/metrics` (e.g.
    /// `0.0.0.0:8443`): plain HTTP, or HTTPS with --metrics-tls-cert-file.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the metrics over HTTPS with this certificate (PEM) ...
    #[arg(long, requires_all = ["metrics_tls_key_file", "metrics_listen"])]
    pub metrics_tls_cert_file: Option<PathBuf>,
    /// ... and this key.
    #[arg(long, requires = "metrics_tls_cert_file")]
    pub metrics_tls_key_file: Option<PathBuf>,
}

impl MetricsArgs {
    /// Serves `/metrics` (if asked) in a task and says where on `out`.
    pub(super) async fn serve(
        &self,
        collect: crate::metrics::Collect,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let Some(addr) = self.metrics_listen else {
            return Ok(());
        };
        let tls = match (&self.metrics_tls_cert_file, &self.metrics_tls_key_file) {
            (Some(cert), Some(key)) => Some(
                crate::api::serve::tls_config(cert, key, None)
                    .map_err(|e| CliError::Setup(e.to_string()))?,
            ),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let bound = crate::metrics::spawn(addr, collect, tls).await?;
        writeln!(
            out,
            "kubevirt-controller: metrics on {scheme}://{bound}/metrics"
        )?;
        Ok(())
    }
}
