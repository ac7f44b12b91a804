//! `docs/bad-input.md` stays true to the tests: every «label» in a cell of its table must appear
//! in the test or example file of that cell's column.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn every_cell_of_the_bad_input_table_is_asserted_by_its_column_s_test() {
    let doc = std::fs::read_to_string(root().join("docs/bad-input.md")).unwrap();
    let columns: [&[&str]; 4] = [
        &["core/tests/bad_input.rs"],
        &["ffi-c/examples/basic.c"],
        &["ffi-cpp/examples/basic.cpp"],
        &["python/tests/test_replay.py", "python/tests/test_gpu.py"],
    ];
    let sources: Vec<String> = columns
        .iter()
        .map(|files| {
            files
                .iter()
                .map(|f| std::fs::read_to_string(root().join(f)).unwrap())
                .collect()
        })
        .collect();
    let (mut rows, mut labels) = (0, 0);
    for line in doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ---"))
    {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 5, "five cells: {line}");
        if cells[0].trim() == "input" {
            continue;
        }
        rows += 1;
        let mut answered = 0;
        for (col, cell) in cells[1..].iter().enumerate() {
            if cell.trim() == "n/a" {
                continue;
            }
            answered += 1;
            let label = cell
                .split('«')
                .nth(1)
                .and_then(|r| r.split('»').next())
                .unwrap_or_else(|| panic!("no «label» in `{cell}`"));
            assert!(
                sources[col].contains(label),
                "«{label}» is not in {:?}",
                columns[col]
            );
            labels += 1;
        }
        assert!(answered > 0, "a row with no answer: {line}");
    }
    assert!(rows >= 10 && labels >= 30, "{rows} rows, {labels} labels");
}
