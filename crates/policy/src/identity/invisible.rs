//! The characters no text may carry, as a table of ranges: Unicode's Default_Ignorable_Code_Point
//! property and the general categories Cc, Cf, Zl and Zp. Generated from ICU4X's data, and the
//! test below checks it against that data for every scalar value (and prints the table to paste
//! when a newer ICU4X knows other characters). 27 ranges are 216 bytes in the worker, where
//! ICU4X's property tries cost kilobytes.

/// Inclusive ranges of scalar values, sorted and disjoint (Unicode 17, from ICU4X 2.4).
const INVISIBLE: [(u32, u32); 27] = [
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

/// Whether `c` is in the table.
pub fn contains(c: char) -> bool {
    let c = u32::from(c);
    // The last range that starts at or before `c`.
    let after = INVISIBLE.partition_point(|(first, _)| *first <= c);
    after > 0 && c <= INVISIBLE[after - 1].1
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory};
    use icu_properties::{CodePointMapData, CodePointSetData};

    /// ICU4X's answer: the property, or one of the four categories.
    fn icu_invisible(c: char) -> bool {
        CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
            || matches!(
                CodePointMapData::<GeneralCategory>::new().get(c),
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            )
    }

    #[test]
    fn the_table_is_icu4x_data_for_every_scalar_value() {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            if icu_invisible(c) {
                let c = u32::from(c);
                match ranges.last_mut() {
                    Some(last) if last.1 + 1 == c => last.1 = c,
                    _ => ranges.push((c, c)),
                }
            }
        }
        let table: String = ranges
            .iter()
            .map(|(a, b)| format!("    ({a:#06X}, {b:#06X}),\n"))
            .collect();
        assert_eq!(
            INVISIBLE.as_slice(),
            ranges.as_slice(),
            "the table ICU4X gives ({} ranges):\n{table}",
            ranges.len()
        );
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(contains(c), icu_invisible(c), "{c:?}");
        }
    }
}
