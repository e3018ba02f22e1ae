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

/// The checksum after a 32-bit field (an address in map form, see [`crate::addr`])
/// changed from `old` to `new`: two 16-bit words replaced.
#[inline(always)]
pub fn replace_u32(check: u16, old: u32, new: u32) -> u16 {
    let (old, new) = (old.to_ne_bytes(), new.to_ne_bytes());
    let check = replace_u16(
        check,
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    replace_u16(
        check,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
}

/// Adds a 16-bit word to a one's complement running sum (kept unfolded in 32 bits).
#[inline(always)]
pub fn add_word(sum: u32, word: u16) -> u32 {
    sum + u32::from(word)
}

/// Folds a running sum to 16 bits: 0xffff when the covered data, checksum included,
/// is intact.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
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

    #[test]
    fn an_address_change_gives_the_checksum_a_full_sum_gives_and_verifies() {
        let mut header = [
            0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 224, 0, 4,
            203, 0, 113, 10,
        ];
        let check = full_checksum(&header);
        header[10..12].copy_from_slice(&check.to_be_bytes());
        let sum = |h: &[u8]| {
            fold(
                h.chunks(2)
                    .fold(0, |s, w| add_word(s, u16::from_be_bytes([w[0], w[1]]))),
            )
        };
        assert_eq!(sum(&header), 0xffff, "an intact header verifies");
        let old = crate::addr::ipv4([10, 224, 0, 4]);
        let new = crate::addr::ipv4([10, 244, 1, 17]);
        let check = replace_u32(check, old, new);
        header[12..16].copy_from_slice(&[10, 244, 1, 17]);
        header[10..12].copy_from_slice(&check.to_be_bytes());
        let mut zeroed = header;
        zeroed[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(check, full_checksum(&zeroed));
        assert_eq!(sum(&header), 0xffff);
        header[15] ^= 1;
        assert_ne!(sum(&header), 0xffff, "a changed byte fails");
    }
}
