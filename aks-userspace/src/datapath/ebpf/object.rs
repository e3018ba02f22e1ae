//! The compiled kernel programs, built by `build.rs` and embedded in the binary.

/// The eBPF object file (ELF with BTF) built from the aks-ebpf crate.
pub fn object_bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/aks-ebpf"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_object_is_a_bpf_elf_with_btf() {
        let object = object_bytes();
        assert_eq!(&object[..4], b"\x7fELF", "not an ELF file");
        // e_machine at offset 18, little-endian: 247 is EM_BPF.
        assert_eq!(
            u16::from_le_bytes([object[18], object[19]]),
            247,
            "not a BPF object"
        );
        let has = |needle: &[u8]| object.windows(needle.len()).any(|w| w == needle);
        assert!(
            has(b".BTF"),
            "the object carries no .BTF section (debug info lost?)"
        );
    }

    #[test]
    fn the_embedded_object_holds_every_map_and_program_and_nothing_unnamed() {
        use aks_ebpf_common::{Program, MAPS};
        let object = aya_obj::Object::parse(object_bytes()).expect("parsing the object");
        let mut programs: Vec<&str> = object.programs.keys().map(String::as_str).collect();
        programs.sort_unstable();
        let mut expected: Vec<&str> = Program::ALL.iter().map(|p| p.name()).collect();
        expected.sort_unstable();
        assert_eq!(programs, expected, "programs in the object");
        // Global data (.rodata, .bss …) and aya-log's buffer are not part of the ABI.
        let mut maps: Vec<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with('.') && *name != "AYA_LOGS")
            .collect();
        maps.sort_unstable();
        let mut expected = MAPS.to_vec();
        expected.sort_unstable();
        assert_eq!(maps, expected, "maps in the object");
    }
}
