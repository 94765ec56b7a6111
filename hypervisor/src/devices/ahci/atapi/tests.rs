//! The drive's answers, without a controller.

use super::*;

fn cdb(bytes: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..bytes.len()].copy_from_slice(bytes);
    c
}

fn reply(d: &mut Cdrom, bytes: &[u8]) -> Vec<u8> {
    match d.packet(&cdb(bytes)) {
        Ok(Transfer::In(v)) => v,
        other => panic!("{bytes:02x?}: {other:?}"),
    }
}

#[test]
fn a_dvd_sized_disc_is_a_dvd() {
    let mut d = Cdrom::new(Some(4 << 30), "s");
    let conf = reply(&mut d, &[0x46, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(&conf[6..8], &[0, 0x10]);
    // RT 2: just the feature asked for (DVD read, current).
    let one = reply(&mut d, &[0x46, 2, 0, 0x1f, 0, 0, 0, 1, 0, 0]);
    assert_eq!(&one[8..12], &[0, 0x1f, 1, 0]);
    assert_eq!(one.len(), 12);
    // RT 1: only current features; CD read is not.
    let current = reply(&mut d, &[0x46, 1, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert!(!current.windows(2).any(|w| w == [0, 0x1e]));
    assert_eq!(d.packet(&cdb(&[0x46, 3])), Err(senses::INVALID_FIELD));
    let phys = reply(&mut d, &[0xad, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04]);
    assert_eq!(phys.len(), 2052);
    assert_eq!(&phys[8..12], &[0, 3, 0, 0]);
    let small = Cdrom::new(Some(1 << 20), "s").packet(&cdb(&[0xad, 0, 0, 0, 0, 0, 0, 0, 8, 4]));
    assert_eq!(small, Err(senses::INCOMPATIBLE_MEDIUM));
}

#[test]
fn replies_are_cut_to_the_allocation_and_sense_is_reported_once() {
    let mut d = Cdrom::new(Some(1 << 20), "serial-1");
    assert_eq!(reply(&mut d, &[0x12, 0, 0, 0, 5, 0]).len(), 5);
    let vpd = reply(&mut d, &[0x12, 1, 0x80, 0, 255, 0]);
    assert_eq!(&vpd[4..], b"serial-1");
    assert_eq!(
        d.packet(&cdb(&[0x12, 1, 0x83, 0, 255])),
        Err(senses::INVALID_FIELD)
    );
    assert_eq!(
        d.packet(&cdb(&[0x12, 0, 1, 0, 255])),
        Err(senses::INVALID_FIELD)
    );
    // A failed command's sense, then nothing.
    let step = d.command(
        &TaskFile {
            is_command: true,
            command: cmd::PACKET,
            ..TaskFile::default()
        },
        &cdb(&[0x28, 0, 0, 1, 0, 0, 0, 0, 1]),
    );
    assert_eq!((step.done.status, step.done.error), (0x41, 0x50));
    let s = reply(&mut d, &[0x03, 0, 0, 0, 18, 0]);
    assert_eq!((s[2], s[12]), (5, 0x21));
    let s = reply(&mut d, &[0x03, 0, 0, 0, 18, 0]);
    assert_eq!(s[2], 0);
    assert_eq!(d.packet(&cdb(&[0x00])), Ok(Transfer::None));
}

#[test]
fn mode_pages_and_the_toc_in_their_forms() {
    let mut d = Cdrom::new(Some(1 << 20), "s");
    let all = reply(&mut d, &[0x5a, 0, 0x3f, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(all.len(), 8 + 8 + 20);
    assert_eq!((all[8], all[16]), (0x01, 0x2a));
    let changeable = reply(&mut d, &[0x5a, 0, 0x6a, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(&changeable[8..10], &[0x2a, 18]);
    assert!(changeable[10..].iter().all(|b| *b == 0));
    assert_eq!(
        d.packet(&cdb(&[0x5a, 0, 0xea])),
        Err(senses::SAVING_NOT_SUPPORTED)
    );
    assert_eq!(d.packet(&cdb(&[0x5a, 0, 0x05])), Err(senses::INVALID_FIELD));
    // Session info, and the lead-out alone.
    let session = reply(&mut d, &[0x43, 0, 1, 0, 0, 0, 0, 0, 12, 0]);
    assert_eq!(session, [0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0]);
    let leadout = reply(&mut d, &[0x43, 0, 0, 0, 0, 0, 0xaa, 0, 12, 0]);
    assert_eq!(&leadout[4..8], &[0, 0x14, 0xaa, 0]);
    assert_eq!(
        d.packet(&cdb(&[0x43, 0, 0, 0, 0, 0, 2, 0, 12])),
        Err(senses::INVALID_FIELD)
    );
    assert_eq!(
        d.packet(&cdb(&[0x43, 0, 2, 0, 0, 0, 0, 0, 12])),
        Err(senses::INVALID_FIELD)
    );
    assert_eq!(address(1000, true), [0, 0, 15, 25]);
    assert_eq!(
        d.packet(&cdb(&[0x4a, 0, 0, 0, 0x10])),
        Err(senses::INVALID_FIELD)
    );
}
