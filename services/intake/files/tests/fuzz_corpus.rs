//! Replays the fuzz seed corpus of the file reader (fuzz/corpus/csv_rows) with the checks of
//! the `csv_rows` fuzz target, so it runs in the normal suite without nightly or libFuzzer.

use cnmas_domain::theme::Theme;
use cnmas_intake_files::{ColumnMap, HeaderReader, Limits, RawRow, RowParser};
use std::path::PathBuf;

fn rows(data: &[u8], chunk: usize, delimiter: u8, limits: Limits, start: u64) -> Vec<RawRow> {
    let mut parser = RowParser::new(delimiter, limits, start, 2);
    let mut rows = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        parser.feed(c, &mut rows);
    }
    parser.finish(&mut rows);
    rows
}

#[test]
fn csv_rows_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../fuzz/corpus/csv_rows");
    let mut contacts = 0;
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.expect("entry").path()).expect("readable");
        seeds += 1;
        let Some((&selector, file)) = data.split_first() else {
            continue;
        };
        let theme = Theme::ALL[selector as usize % Theme::ALL.len()];
        let chunk = 1 + (selector as usize >> 3);
        let limits = Limits {
            max_row_bytes: 256,
            max_field_chars: 64,
        };
        let Ok(Some((header, rest))) = HeaderReader::new(None, limits).push(file, true) else {
            continue;
        };
        let all = rows(&rest, rest.len() + 1, header.delimiter, limits, header.end);
        assert_eq!(
            all,
            rows(&rest, chunk, header.delimiter, limits, header.end)
        );
        if let Ok(map) = ColumnMap::from_header(&header.cells, theme) {
            for r in all {
                if let Ok(cells) = r.cells {
                    contacts += map
                        .contact(r.row, &cells, header.encoding, limits, "i")
                        .is_ok() as usize;
                }
            }
        }
    }
    assert!(seeds >= 3, "the corpus has seeds");
    assert!(contacts > 0, "some seeds hold rows that become contacts");
}
