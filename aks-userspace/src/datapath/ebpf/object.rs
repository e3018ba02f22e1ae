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
        assert!(has(b"from_pod"), "the from_pod program is missing");
        assert!(has(b"STATS"), "the STATS map is missing");
    }
}
