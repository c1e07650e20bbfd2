//! Properties of the file reader that the upload relies on: chunk sizes never change what is
//! read, resuming at a row's end offset reads the same rows, cells round-trip through CSV
//! quoting, and no input makes it panic.

use cnmas_domain::theme::Theme;
use cnmas_intake_files::{ColumnMap, Encoding, HeaderReader, Limits, RawRow, RowParser, COLUMNS};
use proptest::prelude::*;

fn limits() -> Limits {
    Limits {
        max_row_bytes: 200,
        max_field_chars: 50,
    }
}

fn parse(data: &[u8], chunk: usize, offset: u64, first_row: u64) -> Vec<RawRow> {
    let mut p = RowParser::new(b';', limits(), offset, first_row);
    let mut rows = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        p.feed(c, &mut rows);
    }
    p.finish(&mut rows);
    rows
}

/// Writes cells as a CSV line, quoting what needs it.
fn csv_line(cells: &[String]) -> String {
    cells
        .iter()
        .map(|c| {
            if c.contains([';', '"', '\n', '\r']) || c.is_empty() {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn csvish() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just(b';'),
            Just(b'"'),
            Just(b'\n'),
            Just(b'\r'),
            Just(b','),
            any::<u8>(),
            b'a'..=b'z'
        ],
        0..600,
    )
}

proptest! {
    #[test]
    fn chunk_sizes_never_change_the_rows(data in csvish(), chunk in 1usize..70) {
        prop_assert_eq!(parse(&data, chunk, 0, 2), parse(&data, data.len() + 1, 0, 2));
    }

    #[test]
    fn resuming_after_any_row_reads_the_same_rows(data in csvish(), pick in any::<prop::sample::Index>(), chunk in 1usize..50) {
        let all = parse(&data, chunk, 0, 2);
        prop_assume!(!all.is_empty());
        let k = pick.index(all.len());
        let resumed = parse(&data[all[k].end as usize..], chunk, all[k].end, all[k].row + 1);
        prop_assert_eq!(&all[k + 1..], &resumed[..]);
    }

    #[test]
    fn cells_round_trip_through_quoting(rows in proptest::collection::vec(proptest::collection::vec("[^\u{0}]{0,12}", 1..6), 1..8)) {
        // A lone empty cell is a blank line, which is skipped by design.
        prop_assume!(rows.iter().all(|r| r.len() > 1 || !r[0].is_empty()));
        let text: String = rows.iter().map(|r| csv_line(r) + "\r\n").collect();
        let parsed = parse(text.as_bytes(), 7, 0, 2);
        let cells: Vec<Vec<String>> = parsed
            .iter()
            .map(|r| r.cells.clone().expect("short rows").into_iter().map(|c| String::from_utf8(c).expect("utf-8")).collect())
            .collect();
        prop_assert_eq!(cells, rows);
    }

    #[test]
    fn arbitrary_files_never_panic(data in csvish(), declared in 0u8..3, t in 0usize..5) {
        let declared = match declared { 0 => None, 1 => Some(Encoding::Utf8), _ => Some(Encoding::Windows1252) };
        let theme = Theme::ALL[t];
        if let Ok(Some((header, rest))) = HeaderReader::new(declared, limits()).push(&data, true) {
            if let Ok(map) = ColumnMap::from_header(&header.cells, theme) {
                let mut p = RowParser::new(header.delimiter, limits(), header.end, 2);
                let mut rows = Vec::new();
                p.feed(&rest, &mut rows);
                p.finish(&mut rows);
                for r in rows {
                    if let Ok(cells) = r.cells {
                        let _ = map.contact(r.row, &cells, header.encoding, limits(), "i");
                    }
                }
            }
        }
    }

    #[test]
    fn any_row_under_a_valid_header_never_panics(cells in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..25), t in 0usize..5) {
        let theme = Theme::ALL[t];
        let names: Vec<String> = COLUMNS
            .iter()
            .filter(|(_, f)| f.is_none_or(|f| theme.spec().allows(f)))
            .map(|(c, _)| c.to_string())
            .collect();
        let map = ColumnMap::from_header(&names, theme).expect("all allowed columns");
        for e in [Encoding::Utf8, Encoding::Windows1252] {
            let _ = map.contact(2, &cells, e, limits(), "i");
        }
    }
}
