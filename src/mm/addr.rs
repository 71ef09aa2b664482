//! Address newtypes. A guest-physical address cannot be handed to code that
//! wants a physical one; conversions are explicit.

use core::fmt;

/// Size of a translation granule and of an allocator frame.
pub const PAGE_SIZE: u64 = 4096;

macro_rules! address {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            pub const fn as_u64(self) -> u64 {
                self.0
            }
            /// Rounded down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }
            /// Rounded up to a multiple of `align` (a power of two).
            pub const fn align_up(self, align: u64) -> Self {
                Self((self.0 + align - 1) & !(align - 1))
            }
            /// Whether it is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
            /// Offset by `bytes`.
            pub const fn add(self, bytes: u64) -> Self {
                Self(self.0 + bytes)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#x})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address!(
    /// A physical address (what the hypervisor's identity map also uses as virtual).
    PhysAddr
);
address!(
    /// An intermediate physical address: what a guest thinks is physical.
    GuestPhysAddr
);

/// A half-open physical range `[base, base + size)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PhysRange {
    pub base: PhysAddr,
    pub size: u64,
}

impl PhysRange {
    pub const fn new(base: u64, size: u64) -> Self {
        Self {
            base: PhysAddr(base),
            size,
        }
    }
    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.base.0 + self.size
    }
    pub const fn contains(&self, addr: u64) -> bool {
        addr >= self.base.0 && addr < self.end()
    }
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.base.0 < other.end() && other.base.0 < self.end()
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}..{:#x})", self.base.0, self.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        assert_eq!(PhysAddr(0x1234).align_down(0x1000), PhysAddr(0x1000));
        assert_eq!(PhysAddr(0x1234).align_up(0x1000), PhysAddr(0x2000));
        assert!(PhysAddr(0x2000).is_aligned(0x1000));
        assert!(!GuestPhysAddr(0x2001).is_aligned(2));
    }

    #[test]
    fn ranges() {
        let a = PhysRange::new(0x1000, 0x1000);
        assert!(a.contains(0x1fff) && !a.contains(0x2000));
        assert!(a.overlaps(&PhysRange::new(0x1fff, 1)));
        assert!(!a.overlaps(&PhysRange::new(0x2000, 1)));
    }
}
