//! `longseq discretize`: (A, B) -> (Ab, Bb) with step dt.

use longseq::ssm::{discretize, Method};

use crate::io::{self, CliError, Out};

/// Discretise ẋ = A x + B u with step dt into x_k = Ab x_{k−1} + Bb u_k, in f64.
///
/// Reads tensors (f16, f32 or f64):
///   A  [N, N]
///   B  [N, M] (or [N])
/// Writes tensors:
///   Ab  [N, N] f64
///   Bb  B's shape, f64
/// Methods: euler (Ab = I + dt A), backward-euler (Ab = (I − dt A)⁻¹), bilinear (Tustin),
/// zoh (matrix exponential of [[A, B], [0, 0]]·dt; works for singular A). The same as
/// scipy.signal.cont2discrete's euler, backward_diff, bilinear and zoh.
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    allow_negative_numbers = true,
    after_help = "Example (discretises the output of the `longseq hippo` example):\n  \
longseq hippo --measure legs --n 16 --output hippo.safetensors && longseq discretize --input hippo.safetensors --method bilinear --dt 0.01 --output hippo_d.safetensors"
)]
pub struct Args {
    /// safetensors file holding `A` and `B`.
    #[arg(long)]
    input: String,
    /// zoh, bilinear, euler or backward-euler.
    #[arg(long)]
    method: String,
    /// Step Δ > 0.
    #[arg(long)]
    dt: f64,
    /// safetensors file to write.
    #[arg(long)]
    output: String,
}

pub fn run(a: Args) -> Result<(), CliError> {
    io::check_output(Some(&a.output))?;
    let method = Method::parse(&a.method)?;
    let bytes = io::read_file(&a.input)?;
    let st = io::parse(&bytes, &a.input)?;
    let am = io::read(&st, "A", &a.input)?;
    let bm = io::read(&st, "B", &a.input)?;
    let n = match am.shape[..] {
        [n, m] if n == m && n > 0 => n,
        _ => {
            return Err(CliError::Input(format!(
                "`A` has shape {:?}; expected [N, N] with N >= 1",
                am.shape
            )))
        }
    };
    let m = match bm.shape[..] {
        [r] if r == n => 1,
        [r, m] if r == n && m > 0 => m,
        _ => {
            return Err(CliError::Input(format!(
                "`B` has shape {:?}; expected [{n}, M] or [{n}]",
                bm.shape
            )))
        }
    };
    let (ad, bd) = discretize(&am.data, &bm.data, n, m, a.dt, method)?;
    io::write(
        &a.output,
        vec![
            ("Ab", vec![n, n], Out::F64(ad)),
            ("Bb", bm.shape.clone(), Out::F64(bd)),
        ],
    )?;
    println!(
        "wrote Ab [{n}, {n}], Bb {:?} f64 ({}, dt {}) to {}",
        bm.shape,
        a.method.to_lowercase(),
        a.dt,
        a.output
    );
    Ok(())
}
