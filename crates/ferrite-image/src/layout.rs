//! The disk layout of DESIGN.md: which partitions, in which order, of
//! which type and size, and where each one starts. Pure arithmetic.

use crate::gpt::{types, Guid, SECTOR};

/// Partitions start on 1 MiB boundaries.
pub const ALIGN: u64 = 1 << 20;

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Esp,
    UsrA,
    UsrAVerity,
    UsrB,
    UsrBVerity,
    Oem,
    Root,
}

impl Role {
    /// All roles in disk order.
    pub const ALL: [Role; 7] =
        [Role::Esp, Role::UsrA, Role::UsrAVerity, Role::UsrB, Role::UsrBVerity, Role::Oem, Role::Root];

    /// The GPT label, which the running system also finds partitions by.
    pub fn label(self) -> &'static str {
        match self {
            Role::Esp => "EFI-SYSTEM",
            Role::UsrA => "USR-A",
            Role::UsrAVerity => "USR-A-VERITY",
            Role::UsrB => "USR-B",
            Role::UsrBVerity => "USR-B-VERITY",
            Role::Oem => "OEM",
            Role::Root => "ROOT",
        }
    }

    pub fn type_guid(self) -> Guid {
        match self {
            Role::Esp => types::ESP,
            Role::UsrA | Role::UsrB => types::USR_X86_64,
            Role::UsrAVerity | Role::UsrBVerity => types::USR_VERITY_X86_64,
            Role::Oem => types::LINUX_DATA,
            Role::Root => types::ROOT_X86_64,
        }
    }
}

/// Partition sizes in bytes (each a multiple of [`ALIGN`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub esp: u64,
    /// One /usr slot; both slots are this size so any update fits either.
    pub usr: u64,
    /// One verity slot: holds the hash tree of a full /usr slot.
    pub usr_verity: u64,
    pub oem: u64,
    /// ROOT as built; it grows to the disk on first boot.
    pub root: u64,
}

impl Default for Sizes {
    fn default() -> Self {
        const MIB: u64 = 1 << 20;
        Sizes { esp: 128 * MIB, usr: 512 * MIB, usr_verity: 16 * MIB, oem: 16 * MIB, root: 256 * MIB }
    }
}

impl Sizes {
    pub fn of(&self, role: Role) -> u64 {
        match role {
            Role::Esp => self.esp,
            Role::UsrA | Role::UsrB => self.usr,
            Role::UsrAVerity | Role::UsrBVerity => self.usr_verity,
            Role::Oem => self.oem,
            Role::Root => self.root,
        }
    }
}

/// A partition placed on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub role: Role,
    /// Byte offset from the start of the disk.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

impl Placed {
    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }

    pub fn last_lba(&self) -> u64 {
        (self.offset + self.size) / SECTOR - 1
    }
}

/// The whole disk: partitions back to back from 1 MiB, and 1 MiB at the
/// end for the backup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub partitions: Vec<Placed>,
    pub disk_size: u64,
}

impl Layout {
    /// The disk of DESIGN.md: every role.
    pub fn plan(sizes: &Sizes) -> Layout {
        Layout::of_roles(sizes, &Role::ALL)
    }

    /// A disk holding only `roles`, in that order (the PXE set's /usr
    /// image holds USR-A and USR-A-VERITY).
    pub fn of_roles(sizes: &Sizes, roles: &[Role]) -> Layout {
        let mut offset = ALIGN;
        let mut partitions = Vec::new();
        for &role in roles {
            let size = sizes.of(role).div_ceil(ALIGN) * ALIGN;
            partitions.push(Placed { role, offset, size });
            offset += size;
        }
        Layout { partitions, disk_size: offset + ALIGN }
    }

    pub fn get(&self, role: Role) -> Placed {
        *self.partitions.iter().find(|p| p.role == role).expect("every role is placed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_the_design_order_aligned_and_back_to_back() {
        let layout = Layout::plan(&Sizes::default());
        let labels: Vec<_> = layout.partitions.iter().map(|p| p.role.label()).collect();
        assert_eq!(labels, ["EFI-SYSTEM", "USR-A", "USR-A-VERITY", "USR-B", "USR-B-VERITY", "OEM", "ROOT"]);
        assert_eq!(layout.partitions[0].offset, ALIGN);
        for pair in layout.partitions.windows(2) {
            assert_eq!(pair[0].offset + pair[0].size, pair[1].offset);
            assert_eq!(pair[1].offset % ALIGN, 0);
        }
        let root = layout.get(Role::Root);
        assert_eq!(layout.disk_size, root.offset + root.size + ALIGN);
    }

    #[test]
    fn both_slots_have_the_same_size_and_types() {
        let layout = Layout::plan(&Sizes::default());
        assert_eq!(layout.get(Role::UsrA).size, layout.get(Role::UsrB).size);
        assert_eq!(Role::UsrA.type_guid(), Role::UsrB.type_guid());
        assert_eq!(Role::UsrAVerity.type_guid(), Role::UsrBVerity.type_guid());
    }

    #[test]
    fn a_disk_of_some_roles_places_only_those() {
        let sizes = Sizes { usr: 3 * ALIGN + 1, usr_verity: 1, ..Sizes::default() };
        let layout = Layout::of_roles(&sizes, &[Role::UsrA, Role::UsrAVerity]);
        let roles: Vec<_> = layout.partitions.iter().map(|p| p.role).collect();
        assert_eq!(roles, [Role::UsrA, Role::UsrAVerity]);
        assert_eq!(layout.get(Role::UsrA).size, 4 * ALIGN);
        assert_eq!(layout.get(Role::UsrAVerity).offset, 5 * ALIGN);
        assert_eq!(layout.disk_size, 7 * ALIGN);
    }

    #[test]
    fn odd_sizes_round_up_to_the_alignment() {
        let sizes = Sizes { esp: 1, ..Sizes::default() };
        let layout = Layout::plan(&sizes);
        assert_eq!(layout.get(Role::Esp).size, ALIGN);
        assert_eq!(layout.get(Role::Esp).last_lba(), (2 * ALIGN) / 512 - 1);
    }
}
