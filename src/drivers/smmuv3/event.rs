//! Event records (SMMUv3 spec, 7.3 "Event records"): 32 bytes each.

/// One event record's four words.
pub type Record = [u64; 4];

/// An event, decoded as far as a log line needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: u8,
    pub sid: u32,
    /// The input address of the faulting transaction (for the fault
    /// events 0x10..=0x13), else 0.
    pub addr: u64,
    /// Stage 2 faulted (the S2 bit of a translation-related fault).
    pub stage2: bool,
    /// A write (RnW = 0), for the fault events.
    pub write: bool,
}

pub fn decode(r: &Record) -> Event {
    let id = r[0] as u8;
    let fault = (0x10..=0x13).contains(&id);
    Event {
        id,
        sid: (r[0] >> 32) as u32,
        addr: if fault { r[2] } else { 0 },
        // Word 1: S2 bit 39, RnW bit 35 (F_TRANSLATION and its kin).
        stage2: fault && (r[1] >> 39) & 1 == 1,
        write: fault && (r[1] >> 35) & 1 == 0,
    }
}

/// The spec's name for an event ID.
pub fn name(id: u8) -> &'static str {
    match id {
        0x01 => "F_UUT",
        0x02 => "C_BAD_STREAMID",
        0x03 => "F_STE_FETCH",
        0x04 => "C_BAD_STE",
        0x05 => "F_BAD_ATS_TREQ",
        0x06 => "F_STREAM_DISABLED",
        0x07 => "F_TRANSL_FORBIDDEN",
        0x08 => "C_BAD_SUBSTREAMID",
        0x09 => "F_CD_FETCH",
        0x0a => "C_BAD_CD",
        0x0b => "F_WALK_EABT",
        0x10 => "F_TRANSLATION",
        0x11 => "F_ADDR_SIZE",
        0x12 => "F_ACCESS",
        0x13 => "F_PERMISSION",
        0x20 => "F_TLB_CONFLICT",
        0x21 => "F_CFG_CONFLICT",
        0x24 => "E_PAGE_REQUEST",
        0x25 => "F_VMS_FETCH",
        _ => "unknown event",
    }
}

/// GERROR bits (6.3.19) by name, for the log.
pub fn gerror_names(active: u32) -> impl Iterator<Item = &'static str> {
    const NAMES: [(u32, &str); 7] = [
        (1 << 0, "CMDQ_ERR"),
        (1 << 2, "EVTQ_ABT_ERR"),
        (1 << 3, "PRIQ_ABT_ERR"),
        (1 << 4, "MSI_CMDQ_ABT_ERR"),
        (1 << 5, "MSI_EVTQ_ABT_ERR"),
        (1 << 7, "MSI_GERROR_ABT_ERR"),
        (1 << 8, "SFM_ERR"),
    ];
    NAMES
        .into_iter()
        .filter(move |(b, _)| active & b != 0)
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage2_translation_fault_on_a_write() {
        let r = [0x0000_0008_0000_0010, 1 << 39, 0x5000_1000, 0x5000_1000];
        assert_eq!(
            decode(&r),
            Event {
                id: 0x10,
                sid: 8,
                addr: 0x5000_1000,
                stage2: true,
                write: true
            }
        );
        assert_eq!(name(0x10), "F_TRANSLATION");
        let read = [0x10, (1 << 39) | (1 << 35), 0x1000, 0];
        assert!(!decode(&read).write);
    }

    #[test]
    fn configuration_errors_carry_no_address() {
        let r = [0x0000_0100_0000_0002, u64::MAX, 0x1234, 0];
        let e = decode(&r);
        assert_eq!((e.id, e.sid, e.addr, e.stage2), (2, 0x100, 0, false));
        assert_eq!(name(2), "C_BAD_STREAMID");
        assert_eq!(gerror_names(0x101).collect::<Vec<_>>(), ["CMDQ_ERR", "SFM_ERR"]);
    }
}
