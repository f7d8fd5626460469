//! Every kernel's binding layout (its `&[Slot]`, positional) against its WGSL module as naga
//! reads it: each binding the entry point uses is declared in the layout with the same kind
//! (uniform, read-only storage, read-write storage), a slot the layout marks `Unused` is one the
//! entry point does not touch, and every other slot has a binding. A slot list that drifted from
//! its shader (a binding added, removed, reordered or made writable on one side) fails here,
//! without a device, for every I/O variant the runtime lists (`wgnorm::specializations()`).

use std::collections::{BTreeMap, BTreeSet};

use wgnorm::engine::shader::{F16Access, Io, Kernel};
use wgnorm::engine::Slot;
use wgnorm::DType;

/// The kind of each group-0 binding of `kernel`'s module for `io`, and whether its entry point
/// uses it.
fn wgsl_bindings(kernel: Kernel, io: Io, access: F16Access) -> BTreeMap<u32, (Slot, bool)> {
    let source = kernel.source_with(io, access);
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{}: {}", kernel.name(), e.emit_to_string(&source)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{}: {e:?}", kernel.name()));
    assert_eq!(
        module.entry_points.len(),
        1,
        "{}: one entry point",
        kernel.name()
    );
    let ep = info.get_entry_point(0);
    let mut out = BTreeMap::new();
    for (handle, g) in module.global_variables.iter() {
        let Some(b) = &g.binding else { continue };
        assert_eq!(b.group, 0, "{}: bind group 0 only", kernel.name());
        let kind = match g.space {
            naga::AddressSpace::Uniform => Slot::Uniform,
            naga::AddressSpace::Storage { access }
                if access.contains(naga::StorageAccess::STORE) =>
            {
                Slot::ReadWrite
            }
            naga::AddressSpace::Storage { .. } => Slot::Read,
            other => panic!("{}: binding {} in {other:?}", kernel.name(), b.binding),
        };
        out.insert(b.binding, (kind, !ep[handle].is_empty()));
    }
    out
}

fn check(kernel: Kernel, io: Io, access: F16Access) {
    let name = kernel.name();
    let slots = kernel.slots();
    let wgsl = wgsl_bindings(kernel, io, access);
    for (&b, &(kind, used)) in &wgsl {
        let slot = slots.get(b as usize).copied();
        match slot {
            Some(Slot::Unused) => assert!(
                !used,
                "{name} {io:?}: binding {b} is marked Unused in the layout but the entry point uses it"
            ),
            Some(s) if used => assert_eq!(
                s, kind,
                "{name} {io:?}: binding {b} is {kind:?} in WGSL but {s:?} in the layout"
            ),
            Some(_) => {}
            None if used => panic!("{name} {io:?}: binding {b} is used but not in the layout"),
            None => {}
        }
    }
    for (i, s) in slots.iter().enumerate() {
        if *s != Slot::Unused {
            assert!(
                wgsl.contains_key(&(i as u32)),
                "{name} {io:?}: the layout's slot {i} ({s:?}) has no WGSL binding"
            );
        }
    }
}

#[test]
fn every_kernel_layout_matches_its_wgsl_bindings() {
    let mut seen = BTreeSet::new();
    for spec in wgnorm::specializations() {
        let accesses: &[F16Access] = if spec.io.dtype == DType::F16 {
            &[F16Access::Packed, F16Access::Vector]
        } else {
            &[F16Access::Packed]
        };
        for &access in accesses {
            if seen.insert((
                spec.kernel.name(),
                format!("{:?}", spec.io),
                format!("{access:?}"),
            )) {
                check(spec.kernel, spec.io, access);
            }
        }
    }
    assert!(
        seen.len() > 100,
        "only {} kernel variants listed",
        seen.len()
    );
}

/// The check itself can fail: a layout with one slot made writable.
#[test]
fn a_drifted_layout_is_caught() {
    const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite];
    let blend = wgnorm::engine::elementwise::BLEND_KERNEL;
    let io = Io {
        dtype: DType::F32,
        vec4: false,
    };
    check(blend, io, F16Access::Packed);
    let drifted = Kernel::new(blend.name(), blend.parts(), &SLOTS[..3]);
    let caught = std::panic::catch_unwind(|| check(drifted, io, F16Access::Packed));
    assert!(caught.is_err(), "a layout missing the output slot passed");
}
