//! `longseq hippo`: the HiPPO (A, B) of a measure, written as f64 tensors.

use longseq::ssm::{hippo, Measure};

use crate::io::{self, CliError, Out};

/// Write the HiPPO transition matrices of a measure (Gu et al. 2020, arXiv 2008.07669).
///
/// Sign convention (S4's): A carries the minus sign, ċ = A c + B f (LegS: ċ = (A c + B f)/t).
/// Writes tensors:
///   A  [N, N] f64   the state matrix
///   B  [N, 1] f64   the input matrix
/// LegT and FouT have a window θ (--theta): their A and B are divided by θ.
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    allow_negative_numbers = true,
    after_help = "Example (no input file needed):\n  \
longseq hippo --measure legs --n 16 --output hippo.safetensors"
)]
pub struct Args {
    /// Measure: legs (scaled Legendre), legt (translated Legendre), lagt (translated Laguerre),
    /// fout (translated Fourier).
    #[arg(long)]
    measure: String,
    /// State size N >= 1.
    #[arg(long)]
    n: usize,
    /// Window length θ > 0 of legt and fout.
    #[arg(long, default_value_t = 1.0)]
    theta: f64,
    /// safetensors file to write.
    #[arg(long)]
    output: String,
}

pub fn run(a: Args) -> Result<(), CliError> {
    io::check_output(Some(&a.output))?;
    let measure = Measure::parse(&a.measure)?;
    let ss = hippo(measure, a.n, a.theta)?;
    io::write(
        &a.output,
        vec![
            ("A", vec![ss.n, ss.n], Out::F64(ss.a)),
            ("B", vec![ss.n, 1], Out::F64(ss.b)),
        ],
    )?;
    println!(
        "wrote A [{n}, {n}], B [{n}, 1] f64 ({}) to {}",
        a.measure.to_lowercase(),
        a.output,
        n = ss.n
    );
    Ok(())
}
