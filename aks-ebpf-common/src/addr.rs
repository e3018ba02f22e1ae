//! How addresses are stored in maps: IPv4 addresses as `u32` holding the four bytes in
//! network order (`u32::from_ne_bytes(octets)`), exactly as they sit in the packet, so
//! the datapath compares them without swapping.

/// An IPv4 address in map form, from its four octets (`a.b.c.d`).
pub const fn ipv4(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// The four octets of an address in map form.
pub const fn octets(addr: u32) -> [u8; 4] {
    addr.to_ne_bytes()
}

/// The netmask of a prefix length, in map form (`/24` → 255.255.255.0).
pub const fn netmask(prefix_len: u32) -> u32 {
    let host_order = if prefix_len == 0 {
        0
    } else if prefix_len >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - prefix_len)
    };
    host_order.to_be()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_keep_packet_byte_order() {
        assert_eq!(octets(ipv4([10, 224, 0, 4])), [10, 224, 0, 4]);
        assert_eq!(octets(netmask(24)), [255, 255, 255, 0]);
        assert_eq!(octets(netmask(0)), [0, 0, 0, 0]);
        assert_eq!(octets(netmask(32)), [255, 255, 255, 255]);
        assert_eq!(octets(netmask(12)), [255, 240, 0, 0]);
    }
}
