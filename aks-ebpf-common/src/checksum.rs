//! Incremental Internet checksum updates (RFC 1624, eqn. 3): when a 16-bit word of a
//! checksummed header changes from `old` to `new`, the checksum can be fixed without
//! summing the header again. All values are the 16-bit words as numbers (big-endian
//! bytes read with `u16::from_be_bytes`).

/// The checksum after one 16-bit word of the covered data changed from `old` to `new`.
#[inline(always)]
pub fn replace_u16(check: u16, old: u16, new: u16) -> u16 {
    // HC' = ~(~HC + ~m + m'), in one's complement arithmetic.
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksum of an IPv4 header summed from scratch (not with `replace_u16`).
    fn full_checksum(header: &[u8]) -> u16 {
        let mut sum: u32 = header
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn a_ttl_decrement_gives_the_checksum_a_full_sum_gives() {
        let mut header = [
            0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 224, 0, 6,
            203, 0, 113, 10,
        ];
        let check = full_checksum(&header);
        header[10..12].copy_from_slice(&check.to_be_bytes());
        for _ in 0..64 {
            let old = u16::from_be_bytes([header[8], header[9]]);
            header[8] -= 1;
            let new = u16::from_be_bytes([header[8], header[9]]);
            let check = replace_u16(u16::from_be_bytes([header[10], header[11]]), old, new);
            header[10..12].copy_from_slice(&check.to_be_bytes());
            let mut zeroed = header;
            zeroed[10] = 0;
            zeroed[11] = 0;
            assert_eq!(check, full_checksum(&zeroed), "ttl {}", header[8]);
        }
    }
}
