use super::*;

fn setup(request_type: u8, request: u8, value: u16, index: u16, length: u16) -> Setup {
    Setup {
        request_type,
        request,
        value,
        index,
        length,
    }
}

fn configured(kind: HidKind) -> Hid {
    let mut h = Hid::new(kind);
    assert_eq!(
        h.control(&setup(0x00, request::SET_CONFIGURATION, 1, 0, 0), &[]),
        Control::Ok
    );
    assert!(h.configured());
    h
}

fn data(c: Control) -> Vec<u8> {
    match c {
        Control::In(d) => d,
        other => panic!("expected data, got {other:?}"),
    }
}

#[test]
fn descriptors_are_well_formed_and_cut_to_the_request() {
    for kind in [HidKind::Tablet, HidKind::Keyboard] {
        let mut h = Hid::new(kind);
        let dev = data(h.control(&setup(0x80, 6, 0x0100, 0, 64), &[]));
        assert_eq!((dev.len(), dev[0], dev[1], dev[7]), (18, 18, 1, 64));
        assert_eq!(dev[17], 1, "one configuration");
        // The first 8 bytes, as a host asks before it knows the packet size.
        assert_eq!(data(h.control(&setup(0x80, 6, 0x0100, 0, 8), &[])).len(), 8);
        let cfg = data(h.control(&setup(0x80, 6, 0x0200, 0, 255), &[]));
        assert_eq!(u16::from_le_bytes([cfg[2], cfg[3]]) as usize, cfg.len());
        assert_eq!(cfg.len(), 9 + 9 + 9 + 7);
        // Interface: HID; the HID descriptor names the report descriptor's length.
        assert_eq!(cfg[9 + 5], 3);
        let report = data(h.control(&setup(0x81, 6, 0x2200, 0, 512), &[]));
        assert_eq!(
            u16::from_le_bytes([cfg[18 + 7], cfg[18 + 8]]) as usize,
            report.len()
        );
        // Endpoint 0x81, interrupt.
        assert_eq!(&cfg[27..31], &[7, 5, 0x81, 3]);
        let name = data(h.control(&setup(0x80, 6, 0x0302, 0x0409, 255), &[]));
        let text: String = char::decode_utf16(
            name[2..]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]])),
        )
        .map(|c| c.unwrap())
        .collect();
        assert!(text.starts_with("USB "), "{text}");
        // A full-speed device has no qualifier; an unknown string or request stalls.
        assert_eq!(
            h.control(&setup(0x80, 6, 0x0600, 0, 10), &[]),
            Control::Stall
        );
        assert_eq!(
            h.control(&setup(0x80, 6, 0x03ee, 0, 10), &[]),
            Control::Stall
        );
        assert_eq!(h.control(&setup(0x40, 0x55, 0, 0, 0), &[]), Control::Stall);
        assert_eq!(
            h.control(&setup(0x00, request::SET_CONFIGURATION, 2, 0, 0), &[]),
            Control::Stall
        );
    }
}

#[test]
fn tablet_reports_absolute_positions_and_coalesces_motion() {
    let mut h = Hid::new(HidKind::Tablet);
    h.pointer(10, 10, 100, 100, 0);
    assert_eq!(h.pending(), 0, "an unconfigured device queues nothing");
    let mut h = configured(HidKind::Tablet);
    h.pointer(0, 0, 1024, 768, 0);
    h.pointer(1023, 767, 1024, 768, 0);
    h.pointer(5000, -4, 1024, 768, 0);
    assert_eq!(h.pending(), 1, "motion coalesces");
    // Clamped to the screen: right edge, top.
    assert_eq!(h.take_report().unwrap(), vec![0, 0xff, 0x7f, 0, 0, 0]);
    h.pointer(512, 384, 1024, 768, 1);
    h.pointer(512, 384, 1024, 768, 0);
    h.pointer(600, 384, 1024, 768, 0);
    h.buttons(4);
    h.wheel(1);
    let reports: Vec<_> = std::iter::from_fn(|| h.take_report()).collect();
    assert_eq!(reports.len(), 5, "clicks are never merged: {reports:?}");
    let x = u16::from_le_bytes([reports[0][1], reports[0][2]]);
    assert_eq!(x, (512 * 32767 / 1023) as u16);
    assert_eq!(reports[0][0], 1);
    assert_eq!(reports[1][0], 0);
    // SPICE's right button (bit 2) is HID's button 2.
    assert_eq!(reports[3][0], 2);
    // SPICE's wheel down is HID's -1.
    assert_eq!(reports[4][5], 0xff);
    for _ in 0..QUEUE_MAX + 10 {
        h.buttons(1);
        h.buttons(0);
    }
    assert_eq!(h.pending(), QUEUE_MAX);
}

#[test]
fn keyboard_reports_follow_scancodes() {
    let mut h = configured(HidKind::Keyboard);
    // Shift, a, release a, release shift.
    for b in [0x2a, 0x1e, 0x9e, 0xaa] {
        h.key(b);
    }
    let r: Vec<_> = std::iter::from_fn(|| h.take_report()).collect();
    assert_eq!(r[0], vec![2, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(r[1], vec![2, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(r[2], vec![2, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(r[3], vec![0; 8]);
    // Extended: right Ctrl and Up; a repeat of Up changes nothing.
    for b in [0xe0, 0x1d, 0xe0, 0x48, 0xe0, 0x48] {
        h.key(b);
    }
    let r: Vec<_> = std::iter::from_fn(|| h.take_report()).collect();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1], vec![0x10, 0, 0x52, 0, 0, 0, 0, 0]);
    for b in [0xe0, 0xc8, 0xe0, 0x9d] {
        h.key(b);
    }
    h.take_report();
    assert_eq!(h.take_report().unwrap(), vec![0; 8]);
    // Pause: pressed and released, its six bytes taken whole.
    for b in [0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5] {
        h.key(b);
    }
    let r: Vec<_> = std::iter::from_fn(|| h.take_report()).collect();
    assert_eq!(r, vec![vec![0, 0, 0x48, 0, 0, 0, 0, 0], vec![0; 8]]);
    // Seven keys at once: rollover.
    for b in 0x10..0x17 {
        h.key(b);
    }
    let last = std::iter::from_fn(|| h.take_report()).last().unwrap();
    assert_eq!(last, vec![0, 0, 1, 1, 1, 1, 1, 1]);
}

#[test]
fn class_requests() {
    let mut h = configured(HidKind::Keyboard);
    assert_eq!(
        h.control(&setup(0x21, 0x0a, 0x0000, 0, 0), &[]),
        Control::Ok
    );
    assert_eq!(data(h.control(&setup(0xa1, 0x02, 0, 0, 1), &[])), vec![0]);
    assert_eq!(h.control(&setup(0x21, 0x0b, 0, 0, 0), &[]), Control::Ok);
    assert_eq!(data(h.control(&setup(0xa1, 0x03, 0, 0, 1), &[])), vec![0]);
    assert_eq!(
        h.control(&setup(0x21, 0x09, 0x0200, 0, 1), &[0x02]),
        Control::Ok
    );
    assert_eq!(h.leds(), 2);
    assert_eq!(
        data(h.control(&setup(0xa1, 0x01, 0x0100, 0, 8), &[])).len(),
        8
    );
    // The tablet has neither LEDs nor a boot protocol.
    let mut t = configured(HidKind::Tablet);
    assert_eq!(
        t.control(&setup(0x21, 0x09, 0x0200, 0, 1), &[1]),
        Control::Stall
    );
    assert_eq!(t.control(&setup(0x21, 0x0b, 0, 0, 0), &[]), Control::Stall);
    // A bus reset unconfigures and empties the queue.
    t.pointer(1, 1, 10, 10, 1);
    t.reset();
    assert!(!t.configured());
    assert_eq!(t.pending(), 0);
}
