/* The two memory-bound loops of cutting stamps, where numpy takes three passes or strided copies.
 *
 * gather:     copy the size x size windows of one plane into one channel of channel-first stamps
 * interleave: channel-first (n, 6, S, S) stamps -> channels-last (n, S, S, 6), pixels without data zeroed
 *
 * realfake.stamps calls them after checking dtypes, shapes and bounds; counts, sizes, lengths and
 * bounds are checked here again (without overflow), so that a wrong call raises instead of reading or
 * writing out of bounds. Built by pip as an optional
 * extension: without a C compiler, realfake.stamps falls back to numpy with the same results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define NC 6 /* channels: g, r, z images and inverse variances, in any order */

/* The buffer holds at least count items of itemsize bytes (count >= 0, the product not overflowing) */
static int check_len(Py_buffer *b, Py_ssize_t count, Py_ssize_t itemsize, const char *what)
{
    Py_ssize_t need;
    if (count < 0 || __builtin_mul_overflow(count, itemsize, &need)) {
        PyErr_Format(PyExc_ValueError, "%s: %zd items of %zd bytes cannot be", what, count, itemsize);
        return -1;
    }
    if (b->len < need) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, %zd needed", what, b->len, need);
        return -1;
    }
    return 0;
}

/* size x size stamps: size >= 1 and a stamp's bytes counted without overflow */
static int check_size(Py_ssize_t size, Py_ssize_t *stamp)
{
    if (size < 1 || size > 1 << 14) {
        PyErr_Format(PyExc_ValueError, "stamp size %zd not in 1-16384", size);
        return -1;
    }
    *stamp = NC * size * size;
    return 0;
}

static PyObject *gather(PyObject *self, PyObject *args)
{
    Py_buffer plane, iy, ix, out;
    Py_ssize_t height, width, n, size, channel;
    if (!PyArg_ParseTuple(args, "y*nny*y*w*nnn", &plane, &height, &width, &iy, &ix, &out, &n, &size, &channel))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t stamp, pixels;
    if (check_size(size, &stamp) || height < 0 || width < 0 || __builtin_mul_overflow(height, width, &pixels)
        || check_len(&plane, pixels, 4, "plane") || check_len(&iy, n, 8, "iy") || check_len(&ix, n, 8, "ix")
        || check_len(&out, n, stamp * 4, "out")) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "plane of %zd x %zd pixels", height, width);
        goto done;
    }
    const Py_ssize_t s2 = size * size;
    if (channel < 0 || channel >= NC) {
        PyErr_Format(PyExc_ValueError, "channel %zd not in 0-%d", channel, NC - 1);
        goto done;
    }
    const float *src = plane.buf;
    const int64_t *y0 = iy.buf, *x0 = ix.buf;
    float *dst = out.buf;
    for (Py_ssize_t k = 0; k < n; k++)
        if (y0[k] < 0 || x0[k] < 0 || y0[k] > height - size || x0[k] > width - size) {
            PyErr_Format(PyExc_ValueError, "stamp %zd at (%lld, %lld) is not on the %zdx%zd plane", k,
                         (long long)y0[k], (long long)x0[k], height, width);
            goto done;
        }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < n; k++) {
        float *o = dst + (k * NC + channel) * s2;
        for (Py_ssize_t y = 0; y < size; y++)
            memcpy(o + y * size, src + (y0[k] + y) * width + x0[k], size * sizeof(float));
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&plane);
    PyBuffer_Release(&iy);
    PyBuffer_Release(&ix);
    PyBuffer_Release(&out);
    return ret;
}

/* A band has data where its invvar is > 0 and finite and its image finite (realfake.stamps.clean_stamps) */
static inline int has_data(float image, float invvar)
{
    return invvar > 0 && invvar < INFINITY && isfinite(image);
}

static void interleave_stamp(const float *in, Py_ssize_t size, const int *img, const int *ivar, float *o,
                             int32_t *nodata)
{
    const Py_ssize_t s2 = size * size;
    int32_t bad = 0;
    Py_ssize_t p = 0;
#if defined(__SSE2__)
    const __m128 zero = _mm_setzero_ps(), inf = _mm_set1_ps(INFINITY);
    for (; p + 4 <= s2; p += 4, o += 4 * NC) {
        __m128 v[NC], all = _mm_castsi128_ps(_mm_set1_epi32(-1));
        for (int c = 0; c < NC; c++)
            v[c] = _mm_loadu_ps(in + c * s2 + p);
        for (int b = 0; b < 3; b++) {
            const __m128 im = v[img[b]], iv = v[ivar[b]];
            /* (im - im == 0: false for NaN and inf) */
            const __m128 good = _mm_and_ps(_mm_and_ps(_mm_cmpgt_ps(iv, zero), _mm_cmplt_ps(iv, inf)),
                                           _mm_cmpeq_ps(_mm_sub_ps(im, im), zero));
            v[img[b]] = _mm_and_ps(im, good);
            v[ivar[b]] = _mm_and_ps(iv, good);
            all = _mm_and_ps(all, good);
        }
        bad += 4 - __builtin_popcount(_mm_movemask_ps(all));
        /* 4 pixels x 6 channels: a 4x4 transpose of channels 0-3, channels 4-5 in pairs */
        const __m128 t0 = _mm_unpacklo_ps(v[0], v[1]), t1 = _mm_unpacklo_ps(v[2], v[3]);
        const __m128 t2 = _mm_unpackhi_ps(v[0], v[1]), t3 = _mm_unpackhi_ps(v[2], v[3]);
        const __m128 p0 = _mm_movelh_ps(t0, t1), p1 = _mm_movehl_ps(t1, t0);
        const __m128 p2 = _mm_movelh_ps(t2, t3), p3 = _mm_movehl_ps(t3, t2);
        const __m128 e01 = _mm_unpacklo_ps(v[4], v[5]), e23 = _mm_unpackhi_ps(v[4], v[5]);
        _mm_storeu_ps(o, p0);
        _mm_storeu_ps(o + 4, _mm_movelh_ps(e01, p1));
        _mm_storeu_ps(o + 8, _mm_shuffle_ps(p1, e01, _MM_SHUFFLE(3, 2, 3, 2)));
        _mm_storeu_ps(o + 12, p2);
        _mm_storeu_ps(o + 16, _mm_movelh_ps(e23, p3));
        _mm_storeu_ps(o + 20, _mm_shuffle_ps(p3, e23, _MM_SHUFFLE(3, 2, 3, 2)));
    }
#endif
    for (; p < s2; p++, o += NC) {
        int any = 0;
        for (int c = 0; c < NC; c++)
            o[c] = in[c * s2 + p];
        for (int b = 0; b < 3; b++)
            if (!has_data(o[img[b]], o[ivar[b]])) {
                o[img[b]] = o[ivar[b]] = 0;
                any = 1;
            }
        bad += any;
    }
    *nodata = bad;
}

static PyObject *interleave(PyObject *self, PyObject *args)
{
    Py_buffer in, out, nodata, centred;
    Py_ssize_t n, size;
    int img[3], ivar[3];
    if (!PyArg_ParseTuple(args, "y*nn(iii)(iii)w*w*w*", &in, &n, &size, &img[0], &img[1], &img[2], &ivar[0], &ivar[1],
                          &ivar[2], &out, &nodata, &centred))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t stamp;
    if (check_size(size, &stamp) || check_len(&in, n, stamp * 4, "stamps") || check_len(&out, n, stamp * 4, "out")
        || check_len(&nodata, n, 4, "nodata") || check_len(&centred, n, 1, "centred"))
        goto done;
    for (int b = 0; b < 3; b++)
        if (img[b] < 0 || img[b] >= NC || ivar[b] < 0 || ivar[b] >= NC) {
            PyErr_SetString(PyExc_ValueError, "channel index not in 0-5");
            goto done;
        }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < n; k++) {
        float *o = (float *)out.buf + k * stamp;
        interleave_stamp((const float *)in.buf + k * stamp, size, img, ivar, o, (int32_t *)nodata.buf + k);
        const float *centre = o + (size / 2 * size + size / 2) * NC;
        /* cleaned: a band without data there has invvar 0 */
        ((uint8_t *)centred.buf)[k] = centre[ivar[0]] != 0 && centre[ivar[1]] != 0 && centre[ivar[2]] != 0;
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    PyBuffer_Release(&nodata);
    PyBuffer_Release(&centred);
    return ret;
}

static PyMethodDef methods[] = {
    {"gather", gather, METH_VARARGS,
     "gather(plane, height, width, iy, ix, out, n, size, channel): copy the size x size windows at (iy, ix) of a "
     "float32 plane into channel `channel` of n channel-first float32 stamps (n, 6, size, size)"},
    {"interleave", interleave, METH_VARARGS,
     "interleave(stamps, n, size, img, ivar, out, nodata, centred): channel-first float32 stamps into channels-last "
     "`out`, pixels without data in a band zeroed in both its channels; per stamp, the count of pixels without data "
     "(int32) and whether the centre has data (uint8). img, ivar: the channel index of each band's image and invvar"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_stamps", "Stamp cutting kernels for realfake.stamps",
                                    -1, methods};

PyMODINIT_FUNC PyInit__stamps(void) { return PyModule_Create(&module); }
