//! Formats are recorded, never guessed from content (CVE-2008-2004): a guest that writes a
//! qcow2 header into its raw disk, naming another desktop's disk as the backing file, still
//! reads its own raw bytes the next time its disk is opened, and a backing file whose format
//! its referrer does not record is refused rather than probed.

mod common;

use common::*;
use tessera_storage::ops::{self, Durability};
use tessera_storage::{Disk, Format, StorageError};

/// qcow2's backing-format header extension.
const BACKING_FORMAT_EXT: [u8; 4] = 0xE279_2ACAu32.to_be_bytes();

#[test]
fn a_raw_disk_whose_guest_wrote_a_qcow2_header_stays_raw() {
    let d = Dir::new("raw-stays-raw");
    let ds = d.ds();
    // Another user's disk, in the same datastore.
    let other = d.p("other.raw");
    let mut secret = vec![0u8; 1 << 20];
    secret[..17].copy_from_slice(b"OTHER USER'S DATA");
    std::fs::write(&other, &secret).unwrap();
    // A valid overlay on it: the header the hostile guest will write into its own disk.
    let crafted = ops::linked_clone(
        &ds,
        &other,
        Format::Raw,
        &d.p("crafted.qcow2"),
        Durability::Sync,
    )
    .unwrap();
    let header = std::fs::read(&crafted).unwrap();
    std::fs::remove_file(&crafted).unwrap();

    let desk = d.p("desk.raw");
    ops::create(&ds, &desk, 1 << 20, Format::Raw, 65536).unwrap();
    {
        let guest = Disk::open(&ds, &desk, Format::Raw, true).unwrap();
        guest.write(&header, 0).unwrap();
        guest.flush().unwrap();
    }
    // What the content would make of it: a qcow2 overlay on the other user's disk.
    assert_eq!(Format::probe(&desk).unwrap(), Format::Qcow2);
    let probed = Disk::open(&ds, &desk, Format::probe(&desk).unwrap(), false).unwrap();
    let mut leak = [0u8; 17];
    probed.read(&mut leak, 0).unwrap();
    assert_eq!(
        &leak, b"OTHER USER'S DATA",
        "the attack is real when probing"
    );

    // Opened in its recorded format, it is the guest's own raw bytes and nothing else.
    let reopened = Disk::open(&ds, &desk, Format::Raw, false).unwrap();
    assert_eq!(reopened.chain().len(), 1, "no backing file");
    let mut own = vec![0u8; header.len()];
    reopened.read(&mut own, 0).unwrap();
    assert_eq!(own, header);
    // And a snapshot of it, in its recorded format, records raw below the new overlay.
    let snap = ops::snapshot(&ds, &desk, Format::Raw, &d.p("desk.s1")).unwrap();
    let chain = ds.chain(&desk, Format::Qcow2).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(
        (chain[1].path.clone(), chain[1].format),
        (snap, Format::Raw)
    );
}

#[test]
fn a_backing_file_without_a_recorded_format_is_refused() {
    let d = Dir::new("unrecorded-format");
    let ds = d.ds();
    let base = d.p("base.qcow2");
    ops::create(&ds, &base, 1 << 20, Format::Qcow2, 65536).unwrap();
    let top = ops::linked_clone(
        &ds,
        &base,
        Format::Qcow2,
        &d.p("top.qcow2"),
        Durability::Sync,
    )
    .unwrap();
    assert_eq!(ds.chain(&top, Format::Qcow2).unwrap().len(), 2);
    // Turn the backing-format extension into one nobody knows (readers skip those).
    let mut bytes = std::fs::read(&top).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == BACKING_FORMAT_EXT)
        .expect("the overlay records its backing format");
    bytes[at..at + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    std::fs::write(&top, &bytes).unwrap();
    match ds.chain(&top, Format::Qcow2) {
        Err(StorageError::Invalid(m)) => assert!(m.contains("backing file's format"), "{m}"),
        other => panic!("an unrecorded backing format: {other:?}"),
    }
    assert!(Disk::open(&ds, &top, Format::Qcow2, false).is_err());
}
