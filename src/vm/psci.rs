//! PSCI 1.1 and SMCCC 1.1 as a VM sees them: emulated entirely here, on the
//! VM's own vCPUs. Nothing a guest sends is ever forwarded to the firmware:
//! a guest that reached the real PSCI could power the whole board off.
//!
//! Pure decision logic over [`PsciTarget`], so it is tested on the host.

use smccc::arch::{
    SMCCC_ARCH_FEATURES, SMCCC_ARCH_SOC_ID, SMCCC_ARCH_WORKAROUND_1, SMCCC_ARCH_WORKAROUND_2,
    SMCCC_ARCH_WORKAROUND_3, SMCCC_VERSION,
};
use smccc::psci::error::{ALREADY_ON, INVALID_ADDRESS, INVALID_PARAMETERS, NOT_SUPPORTED, ON_PENDING};
use smccc::psci::*;

/// PSCI 1.1 and SMCCC 1.1: major in the upper half, minor in the lower.
pub const PSCI_VERSION_1_1: u64 = 0x1_0001;
pub const SMCCC_VERSION_1_1: u64 = 0x1_0001;
/// MIGRATE_INFO_TYPE: no Trusted OS that needs migrating.
const MIGRATE_TYPE_NOT_PRESENT: u64 = 2;
/// The affinity fields of an MPIDR (Aff3, Aff2, Aff1, Aff0).
pub const MPIDR_AFF_MASK: u64 = 0xff_00ff_ffff;

/// A vCPU's power state, as AFFINITY_INFO reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Power {
    On = 0,
    Off = 1,
    OnPending = 2,
}

/// What the PSCI layer needs to know about and do to a VM.
pub trait PsciTarget {
    /// The vCPU with virtual MPIDR `mpidr` (affinity bits only), if the VM has one.
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize>;
    fn power(&self, vcpu: usize) -> Power;
    /// Atomically moves `vcpu` from Off to OnPending with its entry state;
    /// on failure returns the state it was in.
    fn request_on(&self, vcpu: usize, entry: u64, context: u64) -> Result<(), Power>;
    /// Whether `entry` is an address in the VM's RAM the vCPU could start at.
    fn valid_entry(&self, entry: u64) -> bool;
}

/// What the exit path does after a call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Return to the guest with x0 = value.
    Return(u64),
    /// Power this vCPU off.
    CpuOff,
    /// Stop the whole VM.
    SystemOff,
    /// Restart the whole VM.
    SystemReset,
    /// Wait for an interrupt, then return 0 (CPU_SUSPEND as a WFI).
    Suspend,
}

fn error(code: i32) -> Action {
    Action::Return(code as i64 as u64)
}

/// Handles one SMCCC call: `fid` from w0, `args` from x1..x3.
#[inline(always)]
pub fn call(vm: &impl PsciTarget, fid: u32, args: [u64; 3]) -> Action {
    match fast(fid) {
        Some(v) => Action::Return(v),
        None => call_slow(vm, fid, args),
    }
}

/// Answers that need nothing of the VM: the version queries a guest makes
/// in a loop, and every function of a service we do not implement (SMCCC:
/// only fast calls to the Arm Architecture (owner 0) and Standard Secure
/// (owner 4, PSCI) services exist here).
#[inline(always)]
pub fn fast(fid: u32) -> Option<u64> {
    match fid {
        PSCI_VERSION => Some(PSCI_VERSION_1_1),
        SMCCC_VERSION => Some(SMCCC_VERSION_1_1),
        _ => {
            let owner = (fid >> 24) & 0x3f;
            let fast_call = fid & (1 << 31) != 0;
            (!fast_call || (owner != 0 && owner != 4)).then_some(NOT_SUPPORTED as i64 as u64)
        }
    }
}

#[inline(never)]
fn call_slow(vm: &impl PsciTarget, fid: u32, args: [u64; 3]) -> Action {
    // SMC32/HVC32 calls (bit 30 clear) pass 32-bit arguments.
    let args = if fid & (1 << 30) == 0 {
        args.map(|a| a & 0xffff_ffff)
    } else {
        args
    };
    match fid {
        SMCCC_VERSION => Action::Return(SMCCC_VERSION_1_1),
        SMCCC_ARCH_FEATURES => match args[0] as u32 {
            SMCCC_VERSION | SMCCC_ARCH_FEATURES => Action::Return(0),
            // The Spectre workarounds need firmware we never call on a
            // guest's behalf; Linux then reports the CPU as vulnerable
            // rather than trusting a fake mitigation.
            SMCCC_ARCH_WORKAROUND_1
            | SMCCC_ARCH_WORKAROUND_2
            | SMCCC_ARCH_WORKAROUND_3
            | SMCCC_ARCH_SOC_ID => error(NOT_SUPPORTED),
            _ => error(NOT_SUPPORTED),
        },
        PSCI_VERSION => Action::Return(PSCI_VERSION_1_1),
        PSCI_FEATURES => {
            if supported(args[0] as u32) {
                Action::Return(0)
            } else {
                error(NOT_SUPPORTED)
            }
        }
        PSCI_CPU_ON_32 | PSCI_CPU_ON_64 => cpu_on(vm, args[0], args[1], args[2]),
        PSCI_AFFINITY_INFO_32 | PSCI_AFFINITY_INFO_64 => {
            if args[1] != 0 {
                return error(INVALID_PARAMETERS);
            }
            match vm.vcpu_by_mpidr(args[0] & MPIDR_AFF_MASK) {
                Some(v) => Action::Return(vm.power(v) as u64),
                None => error(INVALID_PARAMETERS),
            }
        }
        PSCI_CPU_OFF => Action::CpuOff,
        PSCI_CPU_SUSPEND_32 | PSCI_CPU_SUSPEND_64 => cpu_suspend(vm, args[0], args[1]),
        PSCI_MIGRATE_INFO_TYPE => Action::Return(MIGRATE_TYPE_NOT_PRESENT),
        PSCI_SYSTEM_OFF => Action::SystemOff,
        PSCI_SYSTEM_RESET => Action::SystemReset,
        _ => error(NOT_SUPPORTED),
    }
}

fn supported(fid: u32) -> bool {
    matches!(
        fid,
        PSCI_VERSION
            | PSCI_FEATURES
            | PSCI_CPU_ON_32
            | PSCI_CPU_ON_64
            | PSCI_CPU_OFF
            | PSCI_CPU_SUSPEND_32
            | PSCI_CPU_SUSPEND_64
            | PSCI_AFFINITY_INFO_32
            | PSCI_AFFINITY_INFO_64
            | PSCI_MIGRATE_INFO_TYPE
            | PSCI_SYSTEM_OFF
            | PSCI_SYSTEM_RESET
            | SMCCC_VERSION
    )
}

/// power_state, original format (PSCI 1.1 §5.4.2.1; PSCI_FEATURES reports
/// it): StateID \[15:0\], StateType \[16\] (1 = power down), PowerLevel
/// \[25:24\], the rest reserved (zero).
const POWER_STATE_RESERVED: u64 = !0x0301_ffff;
const POWER_STATE_POWER_DOWN: u64 = 1 << 16;

/// CPU_SUSPEND. A VM's vCPUs form one level (cores, no clusters), and the
/// states it offers are StateID 0 at level 0: standby, or a power down that
/// Tessera downgrades to standby (permitted: the call then returns SUCCESS
/// like a standby would). Anything else is INVALID_PARAMETERS; a power down
/// must still name an entry point the vCPU could resume at.
fn cpu_suspend(vm: &impl PsciTarget, power_state: u64, entry: u64) -> Action {
    let state_id = power_state & 0xffff;
    let level = (power_state >> 24) & 3;
    if power_state & POWER_STATE_RESERVED != 0 || state_id != 0 || level != 0 {
        return error(INVALID_PARAMETERS);
    }
    if power_state & POWER_STATE_POWER_DOWN != 0 && !vm.valid_entry(entry) {
        return error(INVALID_ADDRESS);
    }
    Action::Suspend
}

fn cpu_on(vm: &impl PsciTarget, mpidr: u64, entry: u64, context: u64) -> Action {
    let Some(v) = vm
        .vcpu_by_mpidr(mpidr & MPIDR_AFF_MASK)
        .filter(|_| mpidr & !MPIDR_AFF_MASK == 0)
    else {
        return error(INVALID_PARAMETERS);
    };
    match vm.power(v) {
        Power::On => return error(ALREADY_ON),
        Power::OnPending => return error(ON_PENDING),
        Power::Off => {}
    }
    if !vm.valid_entry(entry) {
        return error(INVALID_ADDRESS);
    }
    match vm.request_on(v, entry, context) {
        Ok(()) => Action::Return(0),
        Err(Power::On) => error(ALREADY_ON),
        Err(_) => error(ON_PENDING),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;

    struct FakeVm {
        power: RefCell<Vec<Power>>,
        started: RefCell<Vec<(usize, u64, u64)>>,
    }

    impl FakeVm {
        fn new(n: usize) -> Self {
            let mut p = vec![Power::Off; n];
            p[0] = Power::On;
            FakeVm {
                power: RefCell::new(p),
                started: RefCell::new(vec![]),
            }
        }
    }

    impl PsciTarget for FakeVm {
        fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
            ((mpidr as usize) < self.power.borrow().len()).then_some(mpidr as usize)
        }
        fn power(&self, v: usize) -> Power {
            self.power.borrow()[v]
        }
        fn request_on(&self, v: usize, e: u64, c: u64) -> Result<(), Power> {
            let mut p = self.power.borrow_mut();
            if p[v] != Power::Off {
                return Err(p[v]);
            }
            p[v] = Power::OnPending;
            self.started.borrow_mut().push((v, e, c));
            Ok(())
        }
        fn valid_entry(&self, e: u64) -> bool {
            (0x4000_0000..0x4100_0000).contains(&e) && e.is_multiple_of(4)
        }
    }

    fn ret(a: Action) -> i64 {
        match a {
            Action::Return(v) => v as i64,
            other => panic!("expected a return, got {other:?}"),
        }
    }

    #[test]
    fn versions_and_features() {
        let vm = FakeVm::new(2);
        assert_eq!(ret(call(&vm, PSCI_VERSION, [0; 3])), 0x10001);
        assert_eq!(ret(call(&vm, SMCCC_VERSION, [0; 3])), 0x10001);
        assert_eq!(ret(call(&vm, PSCI_FEATURES, [PSCI_CPU_ON_64 as u64, 0, 0])), 0);
        assert_eq!(ret(call(&vm, PSCI_FEATURES, [0xC400_ABCD, 0, 0])), -1);
        assert_eq!(
            ret(call(
                &vm,
                SMCCC_ARCH_FEATURES,
                [SMCCC_ARCH_WORKAROUND_1 as u64, 0, 0]
            )),
            -1
        );
        assert_eq!(ret(call(&vm, PSCI_MIGRATE_INFO_TYPE, [0; 3])), 2);
    }

    #[test]
    fn fast_answers_need_no_vm() {
        assert_eq!(fast(PSCI_VERSION), Some(0x10001));
        assert_eq!(fast(0x8600_0000), Some(u64::MAX));
        assert_eq!(fast(0x0000_0042), Some(u64::MAX), "yielding call");
        assert_eq!(fast(PSCI_CPU_ON_64), None);
        assert_eq!(fast(SMCCC_ARCH_FEATURES), None);
    }

    #[test]
    fn unknown_functions_are_not_supported() {
        let vm = FakeVm::new(1);
        for fid in [
            0x8600_0000u32,
            0xC500_0000,
            0x42,
            0xFFFF_FFFF,
            PSCI_SYSTEM_RESET2_64,
            PSCI_MEM_PROTECT,
        ] {
            assert_eq!(ret(call(&vm, fid, [0; 3])), -1, "{fid:#x}");
        }
    }

    #[test]
    fn cpu_on_rules() {
        let vm = FakeVm::new(3);
        assert_eq!(
            ret(call(&vm, PSCI_CPU_ON_64, [0x63, 0x4000_0000, 0])),
            INVALID_PARAMETERS as i64
        );
        assert_eq!(
            ret(call(&vm, PSCI_CPU_ON_64, [1 << 40 | 1, 0x4000_0000, 0])),
            INVALID_PARAMETERS as i64
        );
        assert_eq!(
            ret(call(&vm, PSCI_CPU_ON_64, [0, 0x4000_0000, 0])),
            ALREADY_ON as i64
        );
        assert_eq!(
            ret(call(&vm, PSCI_CPU_ON_64, [1, 0x10, 0])),
            INVALID_ADDRESS as i64
        );
        assert_eq!(ret(call(&vm, PSCI_CPU_ON_64, [1, 0x4000_1000, 7])), 0);
        assert_eq!(vm.started.borrow()[0], (1, 0x4000_1000, 7));
        assert_eq!(
            ret(call(&vm, PSCI_CPU_ON_64, [1, 0x4000_1000, 7])),
            ON_PENDING as i64
        );
        assert_eq!(ret(call(&vm, PSCI_AFFINITY_INFO_64, [1, 0, 0])), 2);
        assert_eq!(ret(call(&vm, PSCI_AFFINITY_INFO_64, [2, 0, 0])), 1);
        assert_eq!(ret(call(&vm, PSCI_AFFINITY_INFO_64, [0, 0, 0])), 0);
        assert_eq!(
            ret(call(&vm, PSCI_AFFINITY_INFO_64, [9, 0, 0])),
            INVALID_PARAMETERS as i64
        );
        assert_eq!(
            ret(call(&vm, PSCI_AFFINITY_INFO_64, [0, 1, 0])),
            INVALID_PARAMETERS as i64
        );
    }

    #[test]
    fn smc32_arguments_are_truncated() {
        let vm = FakeVm::new(2);
        assert_eq!(
            ret(call(
                &vm,
                PSCI_CPU_ON_32,
                [0xdead_0000_0000_0001, 0x1_4000_2000, 0]
            )),
            0
        );
        assert_eq!(vm.started.borrow()[0].1, 0x4000_2000);
    }

    #[test]
    fn power_actions() {
        let vm = FakeVm::new(1);
        assert_eq!(call(&vm, PSCI_CPU_OFF, [0; 3]), Action::CpuOff);
        assert_eq!(call(&vm, PSCI_SYSTEM_OFF, [0; 3]), Action::SystemOff);
        assert_eq!(call(&vm, PSCI_SYSTEM_RESET, [0; 3]), Action::SystemReset);
        assert_eq!(call(&vm, PSCI_CPU_SUSPEND_64, [0; 3]), Action::Suspend);
    }

    #[test]
    fn cpu_suspend_validates_power_state_and_entry() {
        let vm = FakeVm::new(1);
        let suspend = |ps: u64, entry: u64| call(&vm, PSCI_CPU_SUSPEND_64, [ps, entry, 0]);
        // Standby needs no entry point; a power down needs one in RAM.
        assert_eq!(suspend(0, 0), Action::Suspend);
        assert_eq!(suspend(1 << 16, 0x4000_1000), Action::Suspend);
        assert_eq!(suspend(1 << 16, 0x10), error(INVALID_ADDRESS));
        assert_eq!(suspend(1 << 16, 0x4000_1002), error(INVALID_ADDRESS));
        // Reserved bits, StateIDs and power levels no VM has.
        for ps in [
            1 << 31,
            1 << 17,
            1 << 26,
            1,
            0xffff,
            1 << 24,
            3 << 24,
            u64::MAX,
            1 << 32,
        ] {
            assert_eq!(suspend(ps, 0x4000_1000), error(INVALID_PARAMETERS), "{ps:#x}");
        }
        // SMC32: the upper half of power_state is not looked at.
        assert_eq!(call(&vm, PSCI_CPU_SUSPEND_32, [1 << 32, 0, 0]), Action::Suspend);
    }
}
