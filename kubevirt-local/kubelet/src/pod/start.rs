//! Starting a pod's containers: pull the image (with back-off), create and start attempt `n`,
//! restart an exited one unless it backs off, and say why a container waits.

use std::time::Instant;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::config::{self, Downward};
use super::env_sources::{self, EnvSources};
use super::status::Waiting;
use super::worker::{SHOW_PULL_ERROR, Worker};
use super::{runtime, termination};
use crate::images;

/// The sandbox a container is started in.
pub(super) struct Run<'a> {
    pub(super) sandbox: &'a str,
    pub(super) cfg: &'a cri::PodSandboxConfig,
    pub(super) downward: &'a Downward,
}

impl Worker {
    pub(super) async fn start_created(&mut self, c: &Container, s: &cri::ContainerStatus) {
        if let Err(e) = self
            .ctx
            .cri
            .runtime
            .clone()
            .start_container(cri::StartContainerRequest {
                container_id: s.id.clone(),
            })
            .await
        {
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "RunContainerError".into(),
                    message: e.message().to_string(),
                },
            );
        }
    }

    /// Restarts an exited container unless it is backing off (then it waits in
    /// `CrashLoopBackOff`).
    pub(super) async fn restart(
        &mut self,
        pod: &Pod,
        c: &Container,
        at: &str,
        s: &cri::ContainerStatus,
        run: &Run<'_>,
    ) {
        if self.backoff.waiting(&c.name, Instant::now()) {
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off restarting failed container {} in pod {}_{}({})",
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        self.uid
                    ),
                },
            );
            return;
        }
        self.backoff.fail(&c.name, Instant::now());
        let attempt = s.metadata.as_ref().map_or(0, |m| m.attempt) + 1;
        self.start(pod, c, at, attempt, run).await;
    }

    /// Pulls the image (with back-off), creates and starts attempt `attempt` of `c`, and removes
    /// attempts older than the previous one.
    /// `c` waits: its configuration cannot be made yet (retried at the next pass).
    fn config_error(&mut self, c: &Container, message: String) {
        self.waiting.insert(
            c.name.clone(),
            Waiting {
                reason: "CreateContainerConfigError".into(),
                message,
            },
        );
    }

    pub(super) async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        at: &str,
        attempt: u32,
        run: &Run<'_>,
    ) {
        let image = c.image.clone().unwrap_or_default();
        let pull_key = format!("image/{}", c.name);
        if self.backoff.waiting(&pull_key, Instant::now()) {
            // The failure itself stays visible for a moment, then the back-off shows.
            let fresh = self
                .pull_failed
                .get(&c.name)
                .is_some_and(|t| t.elapsed() < SHOW_PULL_ERROR);
            if fresh {
                return;
            }
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "ImagePullBackOff".into(),
                    message: format!("Back-off pulling image {image:?}"),
                },
            );
            return;
        }
        let started = Instant::now();
        let policy = images::pull_policy(&image, c.image_pull_policy.as_deref());
        match images::ensure_image(&self.ctx.cri, &image, &policy).await {
            Ok(id) => {
                self.backoff.reset(&pull_key);
                self.image_ids.insert(c.name.clone(), id);
            }
            Err(e) => {
                self.backoff.fail(&pull_key, Instant::now());
                self.pull_failed.insert(c.name.clone(), Instant::now());
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: e.reason().into(),
                        message: e.to_string(),
                    },
                );
                return;
            }
        }
        let image_took = started.elapsed();
        let volumes = self.volumes.clone().unwrap_or_default();
        let mut downward = run.downward.clone();
        let (config_maps, secrets) = env_sources::referenced(c);
        if !config_maps.is_empty() || !secrets.is_empty() {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            match EnvSources::fetch(&self.ctx.client, ns, c).await {
                Ok(sources) => downward.sources = sources,
                Err(e) => return self.config_error(c, e.to_string()),
            }
        }
        let mut cfg = match config::container_config(pod, c, at, attempt, &volumes, &downward) {
            Ok(cfg) => cfg,
            // A ConfigMap, Secret or key that may yet appear: wait and retry, as upstream.
            Err(e) if e.missing => return self.config_error(c, e.to_string()),
            Err(e) => {
                self.refused = Some(e.to_string());
                return;
            }
        };
        let dir = self.ctx.pods_dir.join(&self.uid).join("containers");
        if let Err(e) = termination::attach(&mut cfg, c, &dir.join(&c.name), attempt) {
            let message = format!("the termination message file under {}: {e}", dir.display());
            return self.config_error(c, message);
        }
        let created_at = Instant::now();
        let mut rt = self.ctx.cri.runtime.clone();
        let created = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: run.sandbox.to_string(),
                config: Some(cfg),
                sandbox_config: Some(run.cfg.clone()),
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerError".into(),
                        message: e.message().to_string(),
                    },
                );
                return;
            }
        };
        let create_took = created_at.elapsed();
        let started_at = Instant::now();
        if let Err(e) = rt
            .start_container(cri::StartContainerRequest { container_id: id })
            .await
        {
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "RunContainerError".into(),
                    message: e.message().to_string(),
                },
            );
            return;
        }
        tracing::debug!(
            uid = %self.uid,
            container = %c.name,
            attempt,
            image = ?image_took,
            create = ?create_took,
            start = ?started_at.elapsed(),
            total = ?started.elapsed(),
            "container started"
        );
        self.waiting.remove(&c.name);
        if attempt >= 2
            && let Ok(list) = runtime::containers(&self.ctx.cri, run.sandbox).await
        {
            for old in list.iter().filter(|o| {
                o.metadata
                    .as_ref()
                    .is_some_and(|m| m.name == c.name && m.attempt + 1 < attempt)
            }) {
                let _ = runtime::remove_container(&self.ctx.cri, &old.id).await;
            }
            // Their message files go with them.
            termination::prune(&dir.join(&c.name), attempt - 1);
        }
    }
}
