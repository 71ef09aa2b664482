//! One device access from EL2 that survives the device's external abort:
//! the accessors of `devio.S`, each listed in the exception table
//! ([`super::extable`]). For forwarding a guest's access to its own device
//! (the sub-page filter); nothing else of the hypervisor's may abort.

use super::extable::Entry;
use aarch64_cpu::registers::{Readable, Writeable, FAR_EL2};

/// What a load returns: `failed` is 1 if the device aborted it.
#[repr(C)]
struct Loaded {
    value: u64,
    failed: u64,
}

extern "C" {
    fn tessera_devio_read8(addr: u64) -> Loaded;
    fn tessera_devio_read16(addr: u64) -> Loaded;
    fn tessera_devio_read32(addr: u64) -> Loaded;
    fn tessera_devio_read64(addr: u64) -> Loaded;
    fn tessera_devio_write8(addr: u64, value: u64) -> u64;
    fn tessera_devio_write16(addr: u64, value: u64) -> u64;
    fn tessera_devio_write32(addr: u64, value: u64) -> u64;
    fn tessera_devio_write64(addr: u64, value: u64) -> u64;
    static tessera_extable_start: Entry;
    static tessera_extable_end: Entry;
}

/// The device answered the access with an external abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aborted;

/// One load of `width` (1, 2, 4 or 8) bytes at `addr`, zero-extended.
///
/// # Safety
/// `addr` is mapped as device memory in the EL2 map and aligned to `width`,
/// and a read of it has no effect on memory Rust owns.
pub unsafe fn read(addr: u64, width: u8) -> Result<u64, Aborted> {
    let guest_far = FAR_EL2.get();
    // SAFETY: the caller's contract; the accessors touch only `addr`.
    let r = unsafe {
        match width {
            1 => tessera_devio_read8(addr),
            2 => tessera_devio_read16(addr),
            4 => tessera_devio_read32(addr),
            _ => tessera_devio_read64(addr),
        }
    };
    if r.failed == 0 {
        Ok(r.value)
    } else {
        aborted(guest_far)
    }
}

/// One store of the low `width` (1, 2, 4 or 8) bytes of `value` at `addr`,
/// complete (DSB) when it returns.
///
/// # Safety
/// As for [`read`], for a write.
pub unsafe fn write(addr: u64, width: u8, value: u64) -> Result<(), Aborted> {
    let guest_far = FAR_EL2.get();
    // SAFETY: the caller's contract; the accessors touch only `addr`.
    let failed = unsafe {
        match width {
            1 => tessera_devio_write8(addr, value),
            2 => tessera_devio_write16(addr, value),
            4 => tessera_devio_write32(addr, value),
            _ => tessera_devio_write64(addr, value),
        }
    };
    if failed == 0 {
        Ok(())
    } else {
        aborted(guest_far)
    }
}

/// The device's abort was taken at EL2 and overwrote FAR_EL2 with the
/// hypervisor's address of the register: put back the guest's faulting
/// address, which the abort injected into the guest reports in FAR_EL1.
/// (ESR_EL2 and HPFAR_EL2 were read before the access.)
#[cold]
fn aborted<T>(guest_far: u64) -> Result<T, Aborted> {
    FAR_EL2.set(guest_far);
    Err(Aborted)
}

/// The exception table `devio.S` builds.
pub fn table() -> &'static [Entry] {
    // SAFETY: `devio.S` lays out `(insn, fixup)` pairs of `.quad`s, 8-byte
    // aligned, from `tessera_extable_start` up to `tessera_extable_end` in
    // one read-only section; `Entry` is two `u64`s, `repr(C)`.
    unsafe {
        let start = core::ptr::addr_of!(tessera_extable_start);
        let end = core::ptr::addr_of!(tessera_extable_end);
        let n = (end as usize - start as usize) / core::mem::size_of::<Entry>();
        core::slice::from_raw_parts(start, n)
    }
}
