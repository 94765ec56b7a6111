//! What SPICE clients do, forwarded to the VMM as [`Event`]s; which clients are connected,
//! for the refresh loop.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tessera_display_proto::{Event, Link};
use tessera_spice::core::{ChannelEvent, ChannelEventKind};
use tessera_spice::ClientEvents;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connected clients (by connection), with a signal for the idle refresh loop.
#[derive(Default)]
pub struct Clients {
    connected: Mutex<BTreeSet<i32>>,
    changed: Condvar,
}

impl Clients {
    /// Connection `id`'s main channel authenticated (true) or closed (false); a connection
    /// that never authenticated (a wrong ticket) changes nothing when it closes.
    pub fn update(&self, id: i32, arrived: bool) {
        let mut c = lock(&self.connected);
        if arrived {
            c.insert(id);
        } else {
            c.remove(&id);
        }
        self.changed.notify_all();
    }

    /// How many are connected.
    pub fn count(&self) -> usize {
        lock(&self.connected).len()
    }

    /// Sleeps up to `timeout`, waking early when a client arrives.
    pub fn wait_for_one(&self, timeout: Duration) {
        let c = lock(&self.connected);
        let _ = self
            .changed
            .wait_timeout_while(c, timeout, |c| c.is_empty())
            .map(drop);
    }
}

/// Client input and channel changes, sent to the VMM.
pub struct Forward {
    link: Arc<Link>,
    clients: Arc<Clients>,
    inputs: Mutex<BTreeSet<i32>>,
}

impl Forward {
    /// Forwards over `link`, counting connections into `clients`.
    pub fn new(link: Arc<Link>, clients: Arc<Clients>) -> Self {
        Self {
            link,
            clients,
            inputs: Mutex::new(BTreeSet::new()),
        }
    }

    /// Clients whose inputs channel is up.
    pub fn input_clients(&self) -> u32 {
        lock(&self.inputs).len() as u32
    }

    fn send(&self, event: Event) {
        // A failed send means the VMM is gone; the control thread sees the same end of file
        // and ends this process.
        if let Err(e) = self.link.send(&event) {
            tracing::debug!(error = %e, "display: event not sent");
        }
    }
}

impl ClientEvents for Forward {
    fn key(&self, scancode: u8) {
        self.send(Event::Key { scancode });
    }
    fn pointer_absolute(&self, x: i32, y: i32, buttons: u32) {
        self.send(Event::Pointer { x, y, buttons });
    }
    fn pointer_relative(&self, dx: i32, dy: i32, _dz: i32, buttons: u32) {
        self.send(Event::Motion { dx, dy, buttons });
    }
    fn buttons(&self, buttons: u32) {
        self.send(Event::Buttons { buttons });
    }
    fn wheel(&self, delta: i32, buttons: u32) {
        self.send(Event::Wheel { delta, buttons });
    }
    fn resize_request(&self, width: u32, height: u32) {
        self.send(Event::Resize { width, height });
    }
    fn channel(&self, e: ChannelEvent) {
        match (e.channel_type, e.kind) {
            // Main channels count clients: the refresh loop runs at full rate only for them.
            (1, ChannelEventKind::Initialized) => {
                self.clients.update(e.connection_id, true);
                self.send(Event::TicketUsed);
            }
            (1, ChannelEventKind::Disconnected) => self.clients.update(e.connection_id, false),
            // Inputs channels, counted for the VMM (the refresh loop reports the count).
            (3, ChannelEventKind::Initialized) => {
                lock(&self.inputs).insert(e.connection_id);
            }
            (3, ChannelEventKind::Disconnected) => {
                lock(&self.inputs).remove(&e.connection_id);
            }
            _ => {}
        }
    }
}
