//! The display: libspice-server's QXL interface fed from a plain framebuffer, the way QEMU's
//! "simple display" does it (no QXL device). One memslot spans the host address space, so a
//! QXL "physical" address is a host pointer; the primary surface is a canvas the server owns;
//! each dirty rectangle becomes a QXL_DRAW_COPY of a bitmap copied out of the framebuffer,
//! freed when the server releases it.

use std::collections::VecDeque;
use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use spice_server_sys as sys;

use crate::core::guard;
use crate::ClientEvents;

/// Largest surface side the display accepts (the bochs adapter's maximum is 2560x1600).
pub const MAX_SIDE: u32 = 4096;

/// A rectangle of the framebuffer, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// One DRAW_COPY command with everything it points at (QXL pointers are host addresses into
/// this box, so it stays put until the server releases it).
#[repr(C)]
struct Update {
    ext: sys::QXLCommandExt,
    drawable: sys::QXLDrawable,
    image: sys::QXLImage,
    bitmap: Vec<u8>,
}

/// An update's address, handed between our thread and the server's worker.
struct UpdatePtr(*mut Update);
// SAFETY: an Update is owned by exactly one side at a time (queue, then server, then release).
unsafe impl Send for UpdatePtr {}

/// What the QXL callbacks reach through the instance pointer.
#[repr(C)]
pub(crate) struct QxlBox {
    /// First field: libspice-server's callbacks receive a pointer to it, which is also a
    /// pointer to the box.
    pub(crate) qxl: sys::QXLInstance,
    iface: sys::QXLInterface,
    queue: Mutex<VecDeque<UpdatePtr>>,
    events: Arc<dyn ClientEvents>,
    released: AtomicU64,
}

// SAFETY: the raw pointers inside (the interface table, libspice-server's state) are only
// used by libspice-server; our own fields are behind a Mutex or atomic.
unsafe impl Send for QxlBox {}
// SAFETY: as above.
unsafe impl Sync for QxlBox {}

/// # Safety
/// `q` must be the `qxl` field of a live [`QxlBox`] (it is: only ours are registered).
unsafe fn qxl_box<'a>(q: *mut sys::QXLInstance) -> &'a QxlBox {
    // SAFETY: QxlBox is repr(C) with `qxl` first, so the addresses coincide.
    unsafe { &*q.cast::<QxlBox>() }
}

unsafe extern "C" fn attached_worker(_q: *mut sys::QXLInstance) {}
unsafe extern "C" fn set_compression_level(_q: *mut sys::QXLInstance, _level: c_int) {}
unsafe extern "C" fn set_mm_time(_q: *mut sys::QXLInstance, _mm_time: u32) {}

unsafe extern "C" fn get_init_info(_q: *mut sys::QXLInstance, info: *mut sys::QXLDevInitInfo) {
    guard("get_init_info", (), || {
        let i = sys::QXLDevInitInfo {
            num_memslots_groups: 1,
            num_memslots: 1,
            memslot_gen_bits: 1,
            memslot_id_bits: 1,
            qxl_ram_size: 16 << 20,
            internal_groupslot_id: 0,
            n_surfaces: 1,
        };
        // SAFETY: the server passes a writable QXLDevInitInfo.
        unsafe { info.write(i) };
    })
}

unsafe extern "C" fn get_command(q: *mut sys::QXLInstance, ext: *mut sys::QXLCommandExt) -> c_int {
    guard("get_command", 0, || {
        // SAFETY: q is our registered instance.
        let b = unsafe { qxl_box(q) };
        let next = b
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        match next {
            Some(u) => {
                // SAFETY: u is a live Update we queued; from here the server owns it until
                // release_resource; ext is writable.
                unsafe { ext.write((*u.0).ext) };
                1
            }
            None => 0,
        }
    })
}

unsafe extern "C" fn req_cmd_notification(q: *mut sys::QXLInstance) -> c_int {
    guard("req_cmd_notification", 1, || {
        // SAFETY: q is our registered instance.
        let b = unsafe { qxl_box(q) };
        // 1: nothing queued, wake me later (spice_qxl_wakeup); 0: there is work now.
        c_int::from(b.queue.lock().unwrap_or_else(|p| p.into_inner()).is_empty())
    })
}

unsafe extern "C" fn release_resource(q: *mut sys::QXLInstance, r: sys::QXLReleaseInfoExt) {
    guard("release_resource", (), || {
        if r.info.is_null() {
            return;
        }
        // SAFETY: release_info.id holds the Box pointer we put there; the server gives each
        // command back exactly once.
        unsafe {
            let id = std::ptr::addr_of!((*r.info).id).read_unaligned();
            drop(Box::from_raw(id as usize as *mut Update));
            qxl_box(q).released.fetch_add(1, Ordering::Relaxed);
        }
    })
}

unsafe extern "C" fn get_cursor_command(
    _q: *mut sys::QXLInstance,
    _ext: *mut sys::QXLCommandExt,
) -> c_int {
    0
}
unsafe extern "C" fn req_cursor_notification(_q: *mut sys::QXLInstance) -> c_int {
    1
}
unsafe extern "C" fn notify_update(_q: *mut sys::QXLInstance, _update_id: u32) {}
unsafe extern "C" fn flush_resources(_q: *mut sys::QXLInstance) -> c_int {
    0
}
unsafe extern "C" fn async_complete(_q: *mut sys::QXLInstance, _cookie: u64) {}
unsafe extern "C" fn update_area_complete(
    _q: *mut sys::QXLInstance,
    _surface_id: u32,
    _updated_rects: *mut sys::QXLRect,
    _num_updated_rects: u32,
) {
}
unsafe extern "C" fn set_client_capabilities(
    _q: *mut sys::QXLInstance,
    _client_present: u8,
    _caps: *mut u8,
) {
}

unsafe extern "C" fn client_monitors_config(
    q: *mut sys::QXLInstance,
    mc: *mut sys::VDAgentMonitorsConfig,
) -> c_int {
    guard("client_monitors_config", 1, || {
        if mc.is_null() {
            // The server asks whether we take monitor configs (instead of a guest agent): yes.
            return 1;
        }
        // SAFETY: mc points at a config with num_of_monitors entries (the server checked the
        // message size against the count).
        let first = unsafe {
            let n = std::ptr::addr_of!((*mc).num_of_monitors).read_unaligned();
            if n == 0 {
                return 1;
            }
            (*mc).monitors.as_ptr().read_unaligned()
        };
        let (w, h) = (first.width, first.height);
        tracing::debug!(w, h, "the client asks for a resolution");
        // SAFETY: q is our registered instance.
        unsafe { qxl_box(q) }.events.resize_request(w, h);
        1
    })
}

impl QxlBox {
    /// A display instance reporting to `events`; boxed, so its address is stable.
    pub(crate) fn new(events: Arc<dyn ClientEvents>) -> Box<Self> {
        let mut iface = sys::QXLInterface {
            base: sys::SpiceBaseInterface {
                type_: c"qxl".as_ptr(),
                description: c"tessera framebuffer".as_ptr(),
                major_version: sys::SPICE_INTERFACE_QXL_MAJOR,
                minor_version: sys::SPICE_INTERFACE_QXL_MINOR,
            },
            ..Default::default()
        };
        iface.__bindgen_anon_1.attached_worker = Some(attached_worker);
        iface.set_compression_level = Some(set_compression_level);
        iface.set_mm_time = Some(set_mm_time);
        iface.get_init_info = Some(get_init_info);
        iface.get_command = Some(get_command);
        iface.req_cmd_notification = Some(req_cmd_notification);
        iface.release_resource = Some(release_resource);
        iface.get_cursor_command = Some(get_cursor_command);
        iface.req_cursor_notification = Some(req_cursor_notification);
        iface.notify_update = Some(notify_update);
        iface.flush_resources = Some(flush_resources);
        iface.async_complete = Some(async_complete);
        iface.update_area_complete = Some(update_area_complete);
        iface.set_client_capabilities = Some(set_client_capabilities);
        iface.client_monitors_config = Some(client_monitors_config);
        let mut b = Box::new(QxlBox {
            qxl: sys::QXLInstance {
                base: sys::SpiceBaseInstance {
                    sif: std::ptr::null(),
                },
                id: 0,
                st: std::ptr::null_mut(),
            },
            iface,
            queue: Mutex::new(VecDeque::new()),
            events,
            released: AtomicU64::new(0),
        });
        b.qxl.base.sif = &raw const b.iface.base;
        b
    }

    /// Frees the commands the server has not taken yet.
    pub(crate) fn drop_queued(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for u in q.drain(..) {
            // SAFETY: queued updates are still ours.
            drop(unsafe { Box::from_raw(u.0) });
        }
    }

    /// Queues a DRAW_COPY of `rect`, whose pixels (xRGB, 4 bytes each, top-down) are copied
    /// from `fb` (a framebuffer `stride` bytes per line). Returns false for a rectangle that
    /// does not fit `fb` or `surface` (nothing is queued).
    pub(crate) fn queue_copy(
        &self,
        fb: &[u8],
        stride: usize,
        surface: (u32, u32),
        rect: Rect,
        unique: u64,
    ) -> bool {
        let Rect {
            x,
            y,
            width: w,
            height: h,
        } = rect;
        let fits = w > 0
            && h > 0
            && x.checked_add(w).is_some_and(|r| r <= surface.0)
            && y.checked_add(h).is_some_and(|b| b <= surface.1)
            && (y as usize + h as usize - 1)
                .checked_mul(stride)
                .and_then(|o| o.checked_add((x as usize + w as usize) * 4))
                .is_some_and(|end| end <= fb.len());
        if !fits {
            return false;
        }
        let row = w as usize * 4;
        let mut bitmap = Vec::with_capacity(row * h as usize);
        for line in y as usize..(y + h) as usize {
            let off = line * stride + x as usize * 4;
            bitmap.extend_from_slice(&fb[off..off + row]);
        }
        let mut u = Box::new(Update {
            ext: Default::default(),
            drawable: Default::default(),
            image: Default::default(),
            bitmap,
        });
        let up: *mut Update = &raw mut *u;
        let bbox = sys::QXLRect {
            top: y as i32,
            left: x as i32,
            bottom: (y + h) as i32,
            right: (x + w) as i32,
        };
        let d = &mut u.drawable;
        d.release_info.id = up as u64;
        d.surface_id = 0;
        d.effect = sys::QXL_EFFECT_OPAQUE as u8;
        d.type_ = sys::QXL_DRAW_COPY as u8;
        d.bbox = bbox;
        d.clip.type_ = sys::SPICE_CLIP_TYPE_NONE;
        d.surfaces_dest = [-1, -1, -1];
        d.u.copy = sys::QXLCopy {
            src_bitmap: &raw const u.image as u64,
            src_area: sys::QXLRect {
                top: 0,
                left: 0,
                bottom: h as i32,
                right: w as i32,
            },
            rop_descriptor: sys::SPICE_ROPD_OP_PUT as u16,
            scale_mode: 0,
            mask: Default::default(),
        };
        let img = &mut u.image;
        img.descriptor.id = (u64::from(sys::QXL_IMAGE_GROUP_DEVICE) << 32) | unique;
        img.descriptor.type_ = sys::SPICE_IMAGE_TYPE_BITMAP as u8;
        img.descriptor.width = w;
        img.descriptor.height = h;
        let bitmap = sys::QXLBitmap {
            format: sys::SPICE_BITMAP_FMT_32BIT as u8,
            flags: (sys::QXL_BITMAP_DIRECT | sys::QXL_BITMAP_TOP_DOWN) as u8,
            x: w,
            y: h,
            stride: row as u32,
            palette: 0,
            data: u.bitmap.as_ptr() as u64,
        };
        // SAFETY: bindgen's union-field accessor over the image's union storage, which is
        // large enough for a QXLBitmap (checked by bindgen's layout assertions); unaligned
        // write because the struct is packed.
        unsafe {
            std::ptr::from_mut(u.image.__bindgen_anon_1.bitmap.as_mut()).write_unaligned(bitmap);
        }
        u.ext.cmd = sys::QXLCommand {
            data: &raw const u.drawable as u64,
            type_: sys::QXL_CMD_DRAW,
            padding: 0,
        };
        u.ext.group_id = 0;
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(UpdatePtr(Box::into_raw(u)));
        true
    }

    /// Commands queued and not yet taken by the server.
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Commands the server has released (sent and done with).
    pub(crate) fn released(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nobody;
    impl ClientEvents for Nobody {}

    #[test]
    fn rectangles_outside_the_framebuffer_are_refused() {
        let b = QxlBox::new(Arc::new(Nobody));
        let fb = vec![0u8; 64 * 4 * 32];
        let ok = Rect {
            x: 60,
            y: 30,
            width: 4,
            height: 2,
        };
        assert!(b.queue_copy(&fb, 256, (64, 32), ok, 1));
        for bad in [
            Rect { width: 5, ..ok },
            Rect { height: 3, ..ok },
            Rect { width: 0, ..ok },
            Rect { x: u32::MAX, ..ok },
            Rect {
                y: u32::MAX - 1,
                ..ok
            },
        ] {
            assert!(!b.queue_copy(&fb, 256, (64, 32), bad, 2), "{bad:?}");
        }
        // A framebuffer shorter than the surface claims.
        assert!(!b.queue_copy(&fb[..100], 256, (64, 32), ok, 3));
        assert_eq!(b.queued(), 1);
        b.drop_queued();
        assert_eq!(b.queued(), 0);
    }
}
