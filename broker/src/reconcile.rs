//! The pool reconciler: drives each pool toward its desired state, the way a controller does.
//!
//! Each pass over a pool first finishes whatever a previous pass (or a killed broker) left
//! half done: desktops in `provisioning`, `refreshing` or `deleting`, and failed ones whose
//! backoff has passed. Every step is idempotent and its intent is recorded before it acts
//! (the desktop's host and disk are stored before the disk is cloned), so a pass resumed after
//! a crash neither repeats work on another host nor leaves a disk nobody knows about. Then it
//! sizes the pool: enough desktops for `min`, enough free ones for `spare`, never more than
//! `max`; and powers desktops by the pool's policy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tessera_agent::vms::{StopRequest, VmDisk, VmSpec};

use crate::agent_client::{AgentClient, AgentError, GUEST_SHUTDOWN_SECS};
use crate::store::desktops::{Desktop, DesktopState};
use crate::store::events::Event;
use crate::store::pools::{ImageVersion, Pool, PowerPolicy};
use crate::store::{now_ms, Store, StoreError};

/// Refreshes and deletions power the VM off at once: its disk is about to be thrown away, so
/// there is nothing for the guest to save.
const FORCED: StopRequest = StopRequest {
    force: true,
    timeout_secs: None,
};

/// Errors of a reconcile pass.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An agent failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// Nowhere to place a desktop.
    #[error("no online host with a datastore can take desktop {0}")]
    NoHost(String),
}

/// Longest wait between retries of a failed desktop.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Backoff after `attempts` failures: 2, 4, 8 ... seconds, at most [`MAX_BACKOFF`].
pub fn backoff(attempts: i64) -> Duration {
    let secs = 1u64 << attempts.clamp(1, 9);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Desktops that became ready or running.
    pub provisioned: usize,
    /// Desktops refreshed.
    pub refreshed: usize,
    /// Desktops removed.
    pub deleted: usize,
    /// Desktops powered on or off.
    pub powered: usize,
    /// Steps that failed (each recorded on its desktop and in the event log).
    pub failures: usize,
}

/// The reconciler.
pub struct Reconciler {
    store: Store,
    http: reqwest::Client,
    agents: HashMap<String, AgentClient>,
}

impl Reconciler {
    /// A reconciler that reaches agents with `http` (the broker's mutual-TLS client).
    pub fn new(store: Store, http: reqwest::Client) -> Self {
        Self {
            store,
            http,
            agents: HashMap::new(),
        }
    }

    async fn agent(&mut self, host_id: &str) -> Result<AgentClient, ReconcileError> {
        if let Some(a) = self.agents.get(host_id) {
            return Ok(a.clone());
        }
        let h = self.store.host(host_id).await?;
        let a = AgentClient::new(&h.address, self.http.clone());
        self.agents.insert(host_id.to_string(), a.clone());
        Ok(a)
    }

    /// One pass over every enabled pool.
    pub async fn pass(&mut self) -> Result<PassReport, ReconcileError> {
        let mut total = PassReport::default();
        for name in self.store.pool_names().await? {
            let pool = self.store.pool_by_name(&name).await?;
            let r = self.reconcile_pool(&pool).await?;
            total.provisioned += r.provisioned;
            total.refreshed += r.refreshed;
            total.deleted += r.deleted;
            total.powered += r.powered;
            total.failures += r.failures;
        }
        Ok(total)
    }

    /// One pass over `pool`.
    pub async fn reconcile_pool(&mut self, pool: &Pool) -> Result<PassReport, ReconcileError> {
        let mut r = PassReport::default();
        let image = self
            .store
            .image_version(&pool.image_id, pool.spec.image_version)
            .await?;
        // 1. Finish what is under way.
        for d in self.store.desktops_of(&pool.id).await? {
            let due = d.state == DesktopState::Error
                && now_ms() - d.updated_at >= backoff(d.attempts).as_millis() as i64;
            let outcome = match d.state {
                DesktopState::Provisioning => self
                    .provision(pool, &image, d.clone())
                    .await
                    .map(|_| r.provisioned += 1),
                DesktopState::Refreshing => self
                    .refresh(pool, &image, d.clone())
                    .await
                    .map(|_| r.refreshed += 1),
                DesktopState::Deleting => self.destroy(d.clone()).await.map(|_| r.deleted += 1),
                DesktopState::Error if due => {
                    let retry = self
                        .store
                        .transition(&d, DesktopState::Provisioning)
                        .await?;
                    self.provision(pool, &image, retry)
                        .await
                        .map(|_| r.provisioned += 1)
                }
                _ => Ok(()),
            };
            if let Err(e) = outcome {
                r.failures += 1;
                self.record_failure(pool, &d, &e).await?;
            }
        }
        // 2. Size the pool.
        let desktops = self.store.desktops_of(&pool.id).await?;
        let live = desktops
            .iter()
            .filter(|d| d.state != DesktopState::Deleting)
            .count() as i64;
        let free = desktops
            .iter()
            .filter(|d| {
                d.assigned_user.is_none()
                    && matches!(d.state, DesktopState::Ready | DesktopState::Running)
            })
            .count() as i64;
        let s = &pool.spec;
        let want = (s.min_desktops - live)
            .max(s.spare_desktops - free)
            .min(s.max_desktops - live);
        for _ in 0..want.max(0) {
            let d = self.store.new_desktop(pool).await?;
            match self.provision(pool, &image, d.clone()).await {
                Ok(()) => r.provisioned += 1,
                Err(e) => {
                    r.failures += 1;
                    let d = self.store.desktop(&d.id).await?;
                    self.record_failure(pool, &d, &e).await?;
                }
            }
        }
        // Too many (max lowered): free desktops go first.
        let mut excess = live - s.max_desktops;
        for d in desktops.iter().filter(|d| d.assigned_user.is_none()) {
            if excess <= 0 {
                break;
            }
            if matches!(d.state, DesktopState::Ready | DesktopState::Running) {
                let dying = self.store.transition(d, DesktopState::Deleting).await?;
                match self.destroy(dying.clone()).await {
                    Ok(()) => r.deleted += 1,
                    Err(e) => {
                        r.failures += 1;
                        tracing::warn!(desktop = %d.name, error = %e, "delete failed; retried next pass");
                    }
                }
                excess -= 1;
            }
        }
        // 3. Power.
        self.power(pool, &mut r).await?;
        Ok(r)
    }

    /// Powers the pool's free desktops by its policy: always-on keeps every one on,
    /// off-when-idle keeps `spare_desktops` on (warm for the next logons), off-after-logoff
    /// none. Those over the number are shut down through the guest (the ACPI power button,
    /// powered off after `GUEST_SHUTDOWN_SECS` if the guest does not go); each shutdown is an
    /// event saying how the VM stopped. A desktop becomes ready before its VM is stopped: a
    /// logon may take it meanwhile, and its start then waits for the stop (the agent's power
    /// lock) and boots the VM again.
    async fn power(&mut self, pool: &Pool, r: &mut PassReport) -> Result<(), ReconcileError> {
        let on = match pool.spec.power_policy {
            PowerPolicy::AlwaysOn => usize::MAX,
            PowerPolicy::OffWhenIdle => usize::try_from(pool.spec.spare_desktops).unwrap_or(0),
            PowerPolicy::OffAfterLogoff => 0,
        };
        let desktops = self.store.desktops_of(&pool.id).await?;
        let free = |state| {
            desktops
                .iter()
                .filter(move |d| d.assigned_user.is_none() && d.state == state)
        };
        let running: Vec<&Desktop> = free(DesktopState::Running).collect();
        for d in free(DesktopState::Ready).take(on.saturating_sub(running.len())) {
            let Some(h) = d.host_id.clone() else { continue };
            self.agent(&h).await?.start(&d.name).await?;
            self.store.transition(d, DesktopState::Running).await?;
            r.powered += 1;
        }
        for d in running.into_iter().skip(on) {
            let Some(h) = d.host_id.clone() else { continue };
            // Taken by a logon since the listing: it stays on.
            let d = match self.store.transition(d, DesktopState::Ready).await {
                Ok(d) => d,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let how = StopRequest {
                force: false,
                timeout_secs: Some(GUEST_SHUTDOWN_SECS),
            };
            let outcome = match self.agent(&h).await?.stop(&d.name, &how).await {
                Ok(stopped) => {
                    r.powered += 1;
                    format!("ok ({})", stopped.describe())
                }
                Err(e) => {
                    r.failures += 1;
                    tracing::warn!(desktop = %d.name, error = %e, "power-off failed; the next logon's start finds it running");
                    e.to_string()
                }
            };
            self.store
                .record(&Event::new(
                    "reconciler",
                    "power-off",
                    &d.name,
                    &format!("{outcome}; policy {}", pool.spec.power_policy.as_str()),
                ))
                .await?;
        }
        Ok(())
    }

    async fn record_failure(
        &self,
        pool: &Pool,
        d: &Desktop,
        e: &ReconcileError,
    ) -> Result<(), ReconcileError> {
        tracing::warn!(pool = %pool.spec.name, desktop = %d.name, error = %e, "reconcile step failed");
        // The desktop may have moved on (e.g. already in error); record on the current row.
        let current = self.store.desktop(&d.id).await?;
        if current.state.can_become(DesktopState::Error) {
            self.store.fail(&current, &e.to_string()).await?;
        }
        self.store
            .record(&Event {
                at: 0,
                actor: "reconciler".into(),
                action: "reconcile".into(),
                target: d.name.clone(),
                outcome: e.to_string(),
                duration_ms: None,
                detail: String::new(),
            })
            .await?;
        Ok(())
    }

    /// The VM definition of desktop `d` of `pool`.
    fn vm_spec(
        pool: &Pool,
        v: &ImageVersion,
        d: &Desktop,
        ds: &str,
        disk: &str,
    ) -> Result<VmSpec, ReconcileError> {
        if v.kernel.is_none() && v.firmware.is_none() {
            return Err(StoreError::Invalid(format!(
                "image of pool {} has neither a kernel nor UEFI firmware",
                pool.spec.name
            ))
            .into());
        }
        Ok(VmSpec {
            name: d.name.clone(),
            vcpus: u16::try_from(pool.spec.vcpus).unwrap_or(1),
            memory_mib: u64::try_from(pool.spec.memory_mib).unwrap_or(512),
            kernel: v.kernel.clone().map(Into::into),
            firmware: v.firmware.clone().map(Into::into),
            hyperv: v.hyperv,
            tpm: v.tpm,
            initrd: v.initrd.clone().map(Into::into),
            cmdline: v.cmdline.as_ref().map(|c| c.replace("{desktop}", &d.name)),
            disks: vec![VmDisk {
                datastore: ds.to_string(),
                file: disk.to_string(),
                readonly: false,
                format: tessera_storage::Format::Qcow2,
            }],
            // Every desktop has a screen; the agent picks its SPICE port.
            display: true,
        })
    }

    /// The base image's file name in a host's datastore (whose files are `present`), imported
    /// there if missing.
    async fn ensure_base(
        pool: &Pool,
        v: &ImageVersion,
        agent: &AgentClient,
        ds: &str,
        present: &[String],
    ) -> Result<String, ReconcileError> {
        let base = format!(
            "base-{}-v{}.qcow2",
            &pool.image_id[..12.min(pool.image_id.len())],
            pool.spec.image_version
        );
        if !present.contains(&base) {
            let t = Instant::now();
            agent.import(ds, &v.disk, &base).await?;
            tracing::info!(base = %base, ms = t.elapsed().as_millis() as u64, "base image imported");
        }
        Ok(base)
    }

    /// Places (if needed), clones, defines and powers a desktop in `provisioning`.
    async fn provision(
        &mut self,
        pool: &Pool,
        image: &ImageVersion,
        d: Desktop,
    ) -> Result<(), ReconcileError> {
        let t = Instant::now();
        // Intent first: host and disk are recorded before anything is created.
        let d = match (&d.host_id, &d.disk) {
            (Some(_), Some(_)) => d,
            _ => {
                let host = self
                    .store
                    .hosts_by_free_memory()
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| ReconcileError::NoHost(d.name.clone()))?;
                let (ds, _) = self
                    .store
                    .datastores_of(&host.id)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| ReconcileError::NoHost(d.name.clone()))?;
                let disk = format!("{ds}/{}.qcow2", d.name);
                self.store.set_placement(&d, &host.id, &disk).await?
            }
        };
        let (host_id, disk) = (
            d.host_id.clone().unwrap_or_default(),
            d.disk.clone().unwrap_or_default(),
        );
        let (ds, file) = disk.split_once('/').unwrap_or(("", &disk));
        let agent = self.agent(&host_id).await?;
        // One listing of the datastore serves both checks.
        let present = agent.disks(ds).await?;
        let base = Self::ensure_base(pool, image, &agent, ds, &present).await?;
        if !present.iter().any(|n| n == file) {
            agent.clone_disk(ds, &base, file).await?;
        }
        self.define_and_power(pool, image, &d, &agent, ds, file)
            .await?;
        self.store
            .record(&Event {
                at: 0,
                actor: "reconciler".into(),
                action: "provision".into(),
                target: d.name.clone(),
                outcome: "ok".into(),
                duration_ms: Some(t.elapsed().as_millis() as i64),
                detail: format!("host {host_id}, disk {disk}"),
            })
            .await?;
        Ok(())
    }

    /// Replaces a desktop's overlay with a fresh clone of the base (refresh on logoff).
    async fn refresh(
        &mut self,
        pool: &Pool,
        image: &ImageVersion,
        d: Desktop,
    ) -> Result<(), ReconcileError> {
        let (Some(host_id), Some(disk)) = (d.host_id.clone(), d.disk.clone()) else {
            // Never placed: provisioning from scratch is the refresh.
            let p = self.store.transition(&d, DesktopState::Error).await?;
            let p = self
                .store
                .transition(&p, DesktopState::Provisioning)
                .await?;
            return self.provision(pool, image, p).await;
        };
        let (ds, file) = disk.split_once('/').unwrap_or(("", &disk));
        let agent = self.agent(&host_id).await?;
        if agent.vm(&d.name).await?.is_some() {
            agent.stop(&d.name, &FORCED).await?;
        }
        agent.delete_disk(ds, file).await?;
        let present = agent.disks(ds).await?;
        let base = Self::ensure_base(pool, image, &agent, ds, &present).await?;
        agent.clone_disk(ds, &base, file).await?;
        self.define_and_power(pool, image, &d, &agent, ds, file)
            .await
    }

    /// Defines the desktop's VM on its disk and powers it by the pool's policy; the desktop
    /// becomes running or ready.
    async fn define_and_power(
        &self,
        pool: &Pool,
        image: &ImageVersion,
        d: &Desktop,
        agent: &AgentClient,
        ds: &str,
        file: &str,
    ) -> Result<(), ReconcileError> {
        agent
            .define(&Self::vm_spec(pool, image, d, ds, file)?)
            .await?;
        let to = if pool.spec.power_policy == PowerPolicy::AlwaysOn {
            agent.start(&d.name).await?;
            DesktopState::Running
        } else {
            DesktopState::Ready
        };
        self.store.transition(d, to).await?;
        Ok(())
    }

    /// Stops and removes a desktop in `deleting`: VM, disk, then the row.
    async fn destroy(&mut self, d: Desktop) -> Result<(), ReconcileError> {
        if let (Some(host_id), Some(disk)) = (d.host_id.clone(), d.disk.clone()) {
            let (ds, file) = disk.split_once('/').unwrap_or(("", &disk));
            let agent = self.agent(&host_id).await?;
            if agent.vm(&d.name).await?.is_some() {
                agent.stop(&d.name, &FORCED).await?;
                agent.delete_vm(&d.name).await?;
            }
            agent.delete_disk(ds, file).await?;
        }
        self.store.forget_desktop(&d).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(2));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(50), MAX_BACKOFF);
    }
}
