//! fleetctl's tables, laid out as Go's `tabwriter` does with fleetctl's
//! settings (tab width 8, padding 1, padded with tabs): every column but
//! the last is as wide as its widest cell plus one, rounded up to a
//! multiple of 8, and each cell is followed by as many tabs as reach that.
//! Scripts that cut fleetctl's output by tabs keep working.

const TAB_WIDTH: usize = 8;
const PADDING: usize = 1;

/// Renders rows (the header first, if any) into fleetctl's table text.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns.saturating_sub(1)];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(cell.chars().count() + PADDING);
        }
    }
    for width in &mut widths {
        *width = width.div_ceil(TAB_WIDTH) * TAB_WIDTH;
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if let Some(width) = widths.get(i).filter(|_| i + 1 < row.len()) {
                let tabs = (width - cell.chars().count()).div_ceil(TAB_WIDTH);
                out.extend(std::iter::repeat_n('\t', tabs));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn list_machines_default_layout() {
        let text =
            render(&[row(&["MACHINE", "IP", "METADATA"]), row(&["2b4bb6d8...", "172.18.1.1", "hostname=smoke"])]);
        assert_eq!(text, "MACHINE\t\tIP\t\tMETADATA\n2b4bb6d8...\t172.18.1.1\thostname=smoke\n");
    }

    #[test]
    fn list_unit_files_layout() {
        let text = render(&[
            row(&["UNIT", "HASH", "DSTATE", "STATE", "TARGET"]),
            row(&["hello.service", "3750b3e", "launched", "launched", "113f16a7.../172.18.1.1"]),
        ]);
        assert_eq!(
            text,
            "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\n\
             hello.service\t3750b3e\tlaunched\tlaunched\t113f16a7.../172.18.1.1\n"
        );
    }

    #[test]
    fn a_single_column_has_no_tabs() {
        assert_eq!(render(&[row(&["UNIT"]), row(&["a.service"])]), "UNIT\na.service\n");
        assert_eq!(render(&[]), "");
    }
}
