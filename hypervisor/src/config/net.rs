//! NIC configuration: `--net tap=NAME[,mac=52:54:00:xx:xx:xx][,queues=N][,mtu=N]
//! [,vhost=auto|on|off]` on the command line, `[[nets]]` tables in a config file. Each NIC is a virtio-net device on a tap
//! interface that tessera-agent made on the VM's port group (or that exists already).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ConfigError;
use crate::devices::virtio::net::MAX_PAIRS;

/// Smallest and largest MTU a NIC takes (a port group's MTU is 1500 to 9000).
pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 576..=9000;

fn default_mtu() -> u16 {
    1500
}

/// A unicast MAC address, written `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A stable, locally administered address for a NIC without one: QEMU's 52:54:00 prefix
    /// and three bytes of the tap's name hashed, so a VM keeps its address across starts.
    pub fn for_tap(tap: &str) -> Self {
        let h = Sha256::digest(tap.as_bytes());
        Self([0x52, 0x54, 0x00, h[0], h[1], h[2]])
    }
}

impl FromStr for MacAddr {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ConfigError::Mac(s.to_string(), why.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts.next().ok_or_else(|| bad("six bytes in hex"))?;
            if p.len() != 2 {
                return Err(bad("six bytes in hex"));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad("six bytes in hex"))?;
        }
        if parts.next().is_some() {
            return Err(bad("six bytes in hex"));
        }
        if out[0] & 1 != 0 {
            return Err(bad("a multicast address cannot be a NIC's"));
        }
        if out == [0; 6] {
            return Err(bad("all zeroes"));
        }
        Ok(Self(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Whether the kernel's vhost-net moves a NIC's frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VhostMode {
    /// vhost-net when /dev/vhost-net can be opened, else the user-space path (logged).
    #[default]
    Auto,
    /// vhost-net or the VM does not start.
    On,
    /// The user-space path.
    Off,
}

/// One NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The tap interface (made `multi_queue` and `vnet_hdr` when the NIC has several queue
    /// pairs).
    pub tap: String,
    /// The guest's MAC address; default: derived from the tap's name (stable across starts).
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Queue pairs; default: one per vCPU (at most 16).
    #[serde(default)]
    pub queues: Option<u16>,
    /// The MTU the guest is told (the port group's) [default: 1500].
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// The kernel's vhost-net as the fast path [default: auto].
    #[serde(default)]
    pub vhost: VhostMode,
}

impl NetConfig {
    /// The guest's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac.unwrap_or_else(|| MacAddr::for_tap(&self.tap))
    }

    /// Checks what serde cannot (the command line's parser checks the same).
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::Net(self.to_string(), why);
        if self.tap.is_empty() || self.tap.len() > 15 {
            return Err(bad(
                "tap takes an interface name of 1 to 15 characters".into()
            ));
        }
        if let Some(q) = self.queues {
            if !(1..=MAX_PAIRS).contains(&q) {
                return Err(bad(format!("queues takes 1 to {MAX_PAIRS}")));
            }
        }
        if !MTU_RANGE.contains(&self.mtu) {
            return Err(bad(format!(
                "mtu takes {} to {}",
                MTU_RANGE.start(),
                MTU_RANGE.end()
            )));
        }
        Ok(())
    }
}

impl FromStr for NetConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| ConfigError::Net(s.to_string(), why);
        let mut net = NetConfig {
            tap: String::new(),
            mac: None,
            queues: None,
            mtu: default_mtu(),
            vhost: VhostMode::Auto,
        };
        for (i, part) in s.split(',').enumerate() {
            let (key, value) = match part.split_once('=') {
                Some(kv) => kv,
                None if i == 0 => ("tap", part),
                None => return Err(bad(format!("{part:?} is not key=value"))),
            };
            match key {
                "tap" => net.tap = value.to_string(),
                "mac" => {
                    net.mac = Some(value.parse().map_err(|e: ConfigError| bad(e.to_string()))?)
                }
                "queues" => {
                    net.queues = Some(
                        value
                            .parse()
                            .map_err(|_| bad("queues takes a number".into()))?,
                    )
                }
                "mtu" => {
                    net.mtu = value
                        .parse()
                        .map_err(|_| bad("mtu takes a number".into()))?
                }
                "vhost" => {
                    net.vhost = match value {
                        "auto" => VhostMode::Auto,
                        "on" => VhostMode::On,
                        "off" => VhostMode::Off,
                        _ => return Err(bad("vhost takes auto, on or off".into())),
                    }
                }
                _ => return Err(bad(format!("unknown key {key:?}"))),
            }
        }
        net.check()?;
        Ok(net)
    }
}

impl fmt::Display for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tap={}", self.tap)?;
        if let Some(m) = self.mac {
            write!(f, ",mac={m}")?;
        }
        if let Some(q) = self.queues {
            write!(f, ",queues={q}")?;
        }
        write!(f, ",mtu={}", self.mtu)?;
        match self.vhost {
            VhostMode::Auto => Ok(()),
            VhostMode::On => write!(f, ",vhost=on"),
            VhostMode::Off => write!(f, ",vhost=off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_line_form() {
        let n: NetConfig = "tap=vm1-0,mac=52:54:00:ab:cd:ef,queues=4,mtu=9000,vhost=off"
            .parse()
            .unwrap();
        assert_eq!(n.tap, "vm1-0");
        assert_eq!(n.mac(), MacAddr([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
        assert_eq!((n.queues, n.mtu, n.vhost), (Some(4), 9000, VhostMode::Off));
        assert_eq!(n.to_string().parse::<NetConfig>().unwrap(), n);
        let d: NetConfig = "vm1-0".parse().unwrap();
        assert_eq!(d.mtu, 1500);
        assert_eq!(d.mac(), MacAddr::for_tap("vm1-0"), "stable default");
        assert_ne!(d.mac(), MacAddr::for_tap("vm2-0"));
        assert_eq!(d.mac().0[0] & 3, 2, "locally administered unicast");
        for bad in [
            "",
            "tap=",
            "tap=a-very-long-interface",
            "t0,mac=01:00:5e:00:00:01",
            "t0,mac=00:00:00:00:00:00",
            "t0,mac=52:54:00:12:34",
            "t0,mac=52:54:00:12:34:56:78",
            "t0,mac=52:54:00:12:34:zz",
            "t0,queues=0",
            "t0,queues=17",
            "t0,mtu=100",
            "t0,mtu=9001",
            "t0,colour=red",
            "t0,vhost",
            "t0,vhost=maybe",
        ] {
            assert!(bad.parse::<NetConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn toml_tables() {
        let n: NetConfig = toml::from_str("tap = \"t0\"\nmac = \"52:54:00:00:00:01\"\n").unwrap();
        assert_eq!(n.mac, Some(MacAddr([0x52, 0x54, 0, 0, 0, 1])));
        assert!(
            toml::from_str::<NetConfig>("tap = \"t0\"\nmac = \"ff:ff:ff:ff:ff:ff\"\n").is_err()
        );
        let q: NetConfig = toml::from_str("tap = \"t0\"\nqueues = 99\n").unwrap();
        assert!(q.check().is_err());
    }
}
