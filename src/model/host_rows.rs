//! Reading a CPU f32 tensor's values in place, as rows: the kernels take their inputs as
//! slices, and copying a `[tokens, width]` activation out of its tensor (or first making a
//! strided view contiguous) before every layer is serial work the other threads wait on.

use candle_core::{DType, Device, Layout, Result, Storage, Tensor};

/// `rows` rows of `cols` values each; row `i` starts at `offset + i * stride` of `data`.
#[derive(Clone, Copy)]
pub struct HostRows<'a> {
    data: &'a [f32],
    offset: usize,
    stride: usize,
    /// Rows: the product of the leading dimensions.
    pub rows: usize,
    /// Values per row: the last dimension.
    pub cols: usize,
}

impl<'a> HostRows<'a> {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        let start = self.offset + i * self.stride;
        &self.data[start..start + self.cols]
    }

    /// All values in row order, when the rows lie back to back.
    pub fn contiguous(&self) -> Option<&'a [f32]> {
        (self.stride == self.cols || self.rows <= 1)
            .then(|| &self.data[self.offset..self.offset + self.rows * self.cols])
    }
}

/// Calls `f` with the rows of `t` (its last dimension; the others flattened) read in place
/// when `t` is an f32 CPU tensor whose leading dimensions flatten without a copy, else
/// from one contiguous f32 copy on the CPU.
pub fn with_host_rows<R>(t: &Tensor, f: impl FnOnce(HostRows) -> R) -> Result<R> {
    if t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((stride, rows, cols))) = (&*storage, row_strides(layout)) {
            return Ok(f(HostRows {
                data: cpu.as_slice::<f32>()?,
                offset: layout.start_offset(),
                stride,
                rows,
                cols,
            }));
        }
    }
    let copy = t
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .contiguous()?;
    with_host_rows(&copy, f)
}

/// `(row stride, rows, cols)` of a layout whose last dimension is contiguous and whose
/// leading dimensions flatten into one strided dimension.
fn row_strides(layout: &Layout) -> Option<(usize, usize, usize)> {
    let dims = layout.dims();
    let strides = layout.stride();
    let (&cols, leading) = dims.split_last().unwrap_or((&1, &[]));
    if cols > 1 && strides.last() != Some(&1) {
        return None;
    }
    let rows: usize = leading.iter().product();
    // The innermost leading dimension of more than one row sets the stride; every outer one
    // must step over exactly the rows inside it.
    let mut stride = cols;
    let mut span = None;
    for (&dim, &step) in leading.iter().zip(strides).rev() {
        if dim == 1 {
            continue;
        }
        match span {
            None => {
                stride = step;
                span = Some(step * dim);
            }
            Some(inner) if step == inner => span = Some(step * dim),
            Some(_) => return None,
        }
    }
    Some((stride, rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(t: &Tensor) -> Vec<Vec<f32>> {
        with_host_rows(t, |rows| {
            (0..rows.rows).map(|i| rows.row(i).to_vec()).collect()
        })
        .unwrap()
    }

    fn expected(t: &Tensor) -> Vec<Vec<f32>> {
        let cols = t.dims().last().copied().unwrap();
        let flat = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        flat.chunks(cols).map(<[f32]>::to_vec).collect()
    }

    #[test]
    fn reads_contiguous_narrowed_and_reshaped_tensors_in_row_order() {
        let dev = Device::Cpu;
        let values: Vec<f32> = (0..6 * 12).map(|v| v as f32).collect();
        let t = Tensor::from_vec(values, (6, 12), &dev).unwrap();
        let columns = t.narrow(1, 4, 5).unwrap();
        let rows = t.narrow(0, 2, 3).unwrap();
        let heads = t.reshape((6, 3, 4)).unwrap();
        for view in [&t, &columns, &rows, &heads] {
            assert_eq!(rows_of(view), expected(view), "{:?}", view.layout());
        }
        with_host_rows(&columns, |r| {
            assert_eq!((r.rows, r.cols, r.stride), (6, 5, 12));
            assert!(r.contiguous().is_none());
        })
        .unwrap();
        with_host_rows(&rows, |r| assert_eq!(r.contiguous().unwrap()[0], 24.0)).unwrap();
    }

    #[test]
    fn a_transposed_view_is_read_from_a_copy() {
        let t = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap()
            .transpose(0, 1)
            .unwrap();
        assert_eq!(row_strides(t.layout()), None);
        assert_eq!(rows_of(&t), expected(&t));
    }
}
