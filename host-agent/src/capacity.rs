//! What the host can offer: CPUs, memory, and space in each datastore.

use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;

/// A capacity report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Host name.
    pub name: String,
    /// CPU threads.
    pub cpus: u64,
    /// Memory, bytes.
    pub memory_total: u64,
    /// Memory available for new VMs, bytes (MemAvailable).
    pub memory_free: u64,
    /// Datastores.
    pub datastores: Vec<DatastoreSpace>,
}

/// Space in one datastore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatastoreSpace {
    /// Name.
    pub name: String,
    /// Directory.
    pub path: String,
    /// Size of its filesystem, bytes.
    pub capacity: u64,
    /// Free for unprivileged use, bytes.
    pub free: u64,
}

/// "MemTotal: 123 kB" lines of /proc/meminfo, in bytes.
fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Measures the host now.
pub fn measure(cfg: &AgentConfig) -> Capacity {
    let datastores = cfg
        .datastores
        .iter()
        .map(|d| {
            let (capacity, free) = rustix::fs::statvfs(&d.path)
                .map(|s| (s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize))
                .unwrap_or((0, 0));
            DatastoreSpace {
                name: d.name.clone(),
                path: d.path.display().to_string(),
                capacity,
                free,
            }
        })
        .collect();
    Capacity {
        name: cfg.host_name(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        memory_total: meminfo("MemTotal:"),
        memory_free: meminfo("MemAvailable:"),
        datastores,
    }
}
