//! Reading a CSV column with gaps, and filling them.

use longseq::ssm::series::{csv_column, fill, Fill};
use longseq::Error;

#[test]
fn csv_column_marks_empty_nan_and_na_fields_missing() {
    let text = "date,co2\n1,316.1\n2,\n3,NaN\n4,NA\n5,317.5\n";
    let v = csv_column(text, "co2").unwrap();
    assert_eq!(v, vec![Some(316.1), None, None, None, Some(317.5)]);
    assert_eq!(csv_column(text, "date").unwrap()[4], Some(5.0));
    assert!(matches!(
        csv_column(text, "ch4"),
        Err(Error::InvalidArgument { name: "column", .. })
    ));
    assert!(csv_column("a\nx1\n", "a").is_err());
}

#[test]
fn linear_fill_interpolates_inside_and_holds_the_ends() {
    let v = [None, Some(1.0), None, None, Some(4.0), None];
    assert_eq!(
        fill(&v, Fill::Linear).unwrap(),
        vec![1.0, 1.0, 2.0, 3.0, 4.0, 4.0]
    );
    let full = [Some(2.0), Some(3.0)];
    assert_eq!(fill(&full, Fill::Error).unwrap(), vec![2.0, 3.0]);
}

#[test]
fn gaps_are_an_error_by_default_and_all_missing_always() {
    match fill(&[Some(1.0), None, Some(3.0)], Fill::Error) {
        Err(Error::InvalidArgument { reason, .. }) => {
            assert!(
                reason.contains("1 of 3 values are missing (first at data row 1)"),
                "{reason}"
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(fill(&[None, None], Fill::Linear).is_err());
    assert!(Fill::parse("spline").is_err());
}

#[test]
fn the_shipped_mauna_loa_series_has_its_59_gaps() {
    let text = include_str!("../../data/co2_mauna_loa_weekly.csv");
    let v = csv_column(text, "co2").unwrap();
    assert_eq!(
        (v.len(), v.iter().filter(|x| x.is_none()).count()),
        (2284, 59)
    );
    let f = fill(&v, Fill::Linear).unwrap();
    assert!(f.iter().all(|x| (310.0..380.0).contains(x)));
}
