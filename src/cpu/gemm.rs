//! Safe strided views over `matrixmultiply::sgemm` (runtime-dispatched AVX/FMA kernels).

/// A read-only `rows × cols` f32 matrix view with element `(i, j)` at `i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows × cols` with row stride `ld`.
    pub fn rm(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: ld,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// A mutable row-major `rows × cols` view with row stride `ld`.
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

impl<'a> MatMut<'a> {
    pub fn rm(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            ld,
        }
    }
}

/// `C = A·B + beta·C`. With `beta = 0`, C is only written (a NaN already in C does not leak).
pub(crate) fn sgemm(a: Mat<'_>, b: Mat<'_>, beta: f32, c: MatMut<'_>) {
    assert!(
        a.cols == b.rows && a.rows == c.rows && b.cols == c.cols,
        "gemm dims"
    );
    if c.rows == 0 || c.cols == 0 {
        return;
    }
    if a.cols == 0 {
        for i in 0..c.rows {
            let row = &mut c.data[i * c.ld..][..c.cols];
            if beta == 0.0 {
                row.fill(0.0);
            } else {
                row.iter_mut().for_each(|x| *x *= beta);
            }
        }
        return;
    }
    a.check();
    b.check();
    assert!(
        (c.rows - 1) * c.ld + c.cols <= c.data.len(),
        "gemm output out of bounds"
    );
    // SAFETY: every index the product touches was bounds-checked above; A and B are shared
    // borrows that cannot alias the exclusive borrow of C.
    unsafe {
        matrixmultiply::sgemm(
            a.rows,
            a.cols,
            b.cols,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.data.as_mut_ptr(),
            c.ld as isize,
            1,
        );
    }
}
