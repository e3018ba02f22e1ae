//! One table per numbered enum of the map and event ABI (the idea of Cilium's
//! `drop_reasons.h`): each row gives a variant its number and its stable name, and the
//! enum, the list of every value, the lookup by number and the name are all generated
//! from it, so a counter slot, an event and a CLI string can never disagree. Beside it,
//! `plain_data!`: the `aya::Pod` marker the map types share.

/// Declares a `#[repr(int)]` enum from a table of `Variant = number => "name"` rows and
/// derives from it:
/// - `ALL`: every variant in table order;
/// - `$from(number)`: the variant with that number, if any;
/// - `name()`: the stable name `aksnet` prints and accepts.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ty, from $from:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:literal => $text:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                $variant = $value,
            )+
        }

        impl $name {
            /// Every value, in table order.
            pub const ALL: [$name; [$($value),+].len()] = [$($name::$variant),+];

            /// The value numbered `v`, if the table has one.
            pub const fn $from(v: $repr) -> Option<$name> {
                match v {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The stable name printed by `aksnet` and used in its JSON output.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

pub(crate) use named_enum;

/// Implements `aya::Pod` (with the `user` feature, where aya is) for map keys and values,
/// so `aksnet` can read and write them. Each invocation carries its `SAFETY` statement:
/// the types are `#[repr(C)]`, every padding byte is an explicit field, their sizes are
/// asserted beside them, and every bit pattern is a valid value.
macro_rules! plain_data {
    ($($ty:ty),+ $(,)?) => {
        $(
            #[cfg(feature = "user")]
            unsafe impl aya::Pod for $ty {}
        )+
    };
}
pub(crate) use plain_data;

/// Whether `text` starts with `prefix` (usable in const context).
pub(crate) const fn has_prefix(text: &str, prefix: &str) -> bool {
    let (text, prefix) = (text.as_bytes(), prefix.as_bytes());
    if text.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if text[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(has_prefix("drop-malformed", "drop-"));
        assert!(!has_prefix("dro", "drop-"));
        assert!(!has_prefix("redirected-peer", "drop-"));
    }
}
