//! A contact file as intake reads it: header, encoding, separator, rows in chunks, the theme's
//! columns. Never panics, and the chunk size never changes the rows read.
#![no_main]

use cnmas_domain::theme::Theme;
use cnmas_intake_files::{ColumnMap, HeaderReader, Limits, RawRow, RowParser};
use libfuzzer_sys::fuzz_target;

fn rows(data: &[u8], chunk: usize, delimiter: u8, limits: Limits, start: u64) -> Vec<RawRow> {
    let mut parser = RowParser::new(delimiter, limits, start, 2);
    let mut rows = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        parser.feed(c, &mut rows);
    }
    parser.finish(&mut rows);
    rows
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let theme = Theme::ALL[selector as usize % Theme::ALL.len()];
    let chunk = 1 + (selector as usize >> 3);
    let limits = Limits {
        max_row_bytes: 256,
        max_field_chars: 64,
    };
    let Ok(Some((header, rest))) = HeaderReader::new(None, limits).push(file, true) else {
        return;
    };
    let all = rows(&rest, rest.len() + 1, header.delimiter, limits, header.end);
    assert_eq!(
        all,
        rows(&rest, chunk, header.delimiter, limits, header.end)
    );
    let mut last = header.end;
    for r in &all {
        assert!(r.end >= last && r.end <= file.len() as u64);
        last = r.end;
    }
    if let Ok(map) = ColumnMap::from_header(&header.cells, theme) {
        for r in all {
            if let Ok(cells) = r.cells {
                let _ = map.contact(r.row, &cells, header.encoding, limits, "i");
            }
        }
    }
});
