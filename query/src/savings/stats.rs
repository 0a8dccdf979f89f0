//! The small amount of statistics the savings analyses need: ordinary least squares with an
//! intercept and standard errors, Student-t p-values, percentiles. Written out rather than pulled
//! from a crate because the models have at most three parameters.

/// A least-squares fit of `y = b0 + b1·x1 + … + bk·xk`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ols {
    /// Intercept first, then one coefficient per regressor.
    pub coef: Vec<f64>,
    /// Two-sided p-values of the coefficients (t-test against 0), same order as `coef`.
    pub p_value: Vec<f64>,
    pub r_squared: f64,
    pub adj_r_squared: f64,
    /// Sum of squared residuals.
    pub ssr: f64,
    pub n: usize,
}

/// Fits `y` on an intercept and the columns of `x` (each `x[j]` as long as `y`). `None` when the
/// design matrix is singular (e.g. a regressor that is constant or all zero) or there are no
/// residual degrees of freedom.
// Index loops read as the matrix algebra they implement.
#[allow(clippy::needless_range_loop)]
pub fn ols(y: &[f64], x: &[&[f64]]) -> Option<Ols> {
    let n = y.len();
    let p = x.len() + 1;
    if n <= p || x.iter().any(|c| c.len() != n) {
        return None;
    }
    let col = |j: usize, i: usize| if j == 0 { 1.0 } else { x[j - 1][i] };
    let mut xtx = vec![vec![0.0; p]; p];
    let mut xty = vec![0.0; p];
    for i in 0..n {
        for a in 0..p {
            let xa = col(a, i);
            xty[a] += xa * y[i];
            for b in a..p {
                xtx[a][b] += xa * col(b, i);
            }
        }
    }
    for a in 0..p {
        for b in 0..a {
            xtx[a][b] = xtx[b][a];
        }
    }
    let inv = invert(xtx)?;
    let coef: Vec<f64> = (0..p)
        .map(|a| (0..p).map(|b| inv[a][b] * xty[b]).sum())
        .collect();
    let mean = y.iter().sum::<f64>() / n as f64;
    let mut ssr = 0.0;
    let mut sst = 0.0;
    for i in 0..n {
        let fit: f64 = (0..p).map(|j| coef[j] * col(j, i)).sum();
        ssr += (y[i] - fit).powi(2);
        sst += (y[i] - mean).powi(2);
    }
    let df = (n - p) as f64;
    let sigma2 = ssr / df;
    let p_value = (0..p)
        .map(|j| {
            let se = (sigma2 * inv[j][j]).sqrt();
            if se > 0.0 {
                t_two_sided_p(coef[j] / se, df)
            } else {
                // A perfect fit: the coefficient is exactly determined.
                0.0
            }
        })
        .collect();
    let r_squared = if sst > 0.0 { 1.0 - ssr / sst } else { 0.0 };
    let adj_r_squared = 1.0 - (1.0 - r_squared) * (n as f64 - 1.0) / df;
    Some(Ols {
        coef,
        p_value,
        r_squared,
        adj_r_squared,
        ssr,
        n,
    })
}

/// Gauss–Jordan inversion with partial pivoting; `None` if (numerically) singular.
#[allow(clippy::needless_range_loop)]
fn invert(mut m: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let p = m.len();
    let scale = m
        .iter()
        .flatten()
        .fold(0.0_f64, |acc, v| acc.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let mut inv: Vec<Vec<f64>> = (0..p)
        .map(|i| (0..p).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for c in 0..p {
        let pivot = (c..p).max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))?;
        if m[pivot][c].abs() <= scale * 1e-12 {
            return None;
        }
        m.swap(c, pivot);
        inv.swap(c, pivot);
        let d = m[c][c];
        for j in 0..p {
            m[c][j] /= d;
            inv[c][j] /= d;
        }
        for r in 0..p {
            if r != c {
                let f = m[r][c];
                if f != 0.0 {
                    for j in 0..p {
                        m[r][j] -= f * m[c][j];
                        inv[r][j] -= f * inv[c][j];
                    }
                }
            }
        }
    }
    Some(inv)
}

/// P(|T| ≥ |t|) for Student's t with `df` degrees of freedom.
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return if t.is_nan() { f64::NAN } else { 0.0 };
    }
    regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// I_x(a, b) by the continued fraction of Numerical Recipes §6.4 (modified Lentz).
fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..500 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut s = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        s += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// The `q`-quantile (0..=1) of finite values by linear interpolation between order statistics
/// (type 7, as numpy's default). `None` for an empty slice.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_p_values_match_tables() {
        // Cauchy (df = 1): P(|T| > 1) = 1/2 exactly.
        assert!((t_two_sided_p(1.0, 1.0) - 0.5).abs() < 1e-12);
        // Standard t tables: t = 2.228 is the two-sided 5 % point for df = 10, 2.086 for df = 20.
        assert!((t_two_sided_p(2.228, 10.0) - 0.05).abs() < 2e-4);
        assert!((t_two_sided_p(2.086, 20.0) - 0.05).abs() < 2e-4);
        // Large df → normal: 1.96 two-sided ≈ 0.05.
        assert!((t_two_sided_p(1.959_964, 1e7) - 0.05).abs() < 1e-5);
        assert_eq!(t_two_sided_p(0.0, 5.0), 1.0);
        assert!(t_two_sided_p(40.0, 100.0) < 1e-60);
    }

    #[test]
    fn ln_gamma_known_values() {
        assert!((ln_gamma(1.0)).abs() < 1e-13);
        assert!((ln_gamma(5.0) - 24.0_f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn ols_recovers_exact_line_and_rejects_singular() {
        let x: Vec<f64> = (0..20).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 3.0 + 2.0 * v).collect();
        let f = ols(&y, &[x.as_slice()]).unwrap();
        assert!((f.coef[0] - 3.0).abs() < 1e-9 && (f.coef[1] - 2.0).abs() < 1e-9);
        assert!((f.r_squared - 1.0).abs() < 1e-12);
        let zeros = vec![0.0; 20];
        assert!(ols(&y, &[zeros.as_slice()]).is_none());
        let ones = vec![1.0; 20];
        assert!(ols(&y, &[ones.as_slice()]).is_none());
        assert!(ols(&y[..1], &[]).is_none());
    }

    #[test]
    fn ols_p_value_of_a_noise_regressor_is_large() {
        // y does not depend on x (alternating pattern orthogonal to the trend).
        let x: Vec<f64> = (0..40).map(f64::from).collect();
        let y: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 10.0 } else { 11.0 })
            .collect();
        let f = ols(&y, &[x.as_slice()]).unwrap();
        assert!(f.p_value[1] > 0.5, "{:?}", f.p_value);
        assert!(f.p_value[0] < 1e-10);
        assert!(f.adj_r_squared < f.r_squared);
    }

    #[test]
    fn percentiles() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 0.5), Some(3.0));
        assert_eq!(percentile(&v, 1.0), Some(5.0));
        assert_eq!(percentile(&v, 0.1), Some(1.4));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
