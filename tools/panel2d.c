/* panel2d: one picture of the 2-D comparison. Row r is data set r (8
   Gaussians, rings, checkerboard, moons); its first cell is the true density,
   then one cell per recipe named on the command line: the learned density
   exp(f)/Z that `toy2d --density-npy DIR/<data>_<recipe>.npy` wrote (a
   missing file, e.g. a diverged run, leaves its cell grey). Each cell is
   scaled to its own maximum.
   Usage: panel2d DIR OUT.png RECIPE... */
#define EBM_IMPLEMENTATION
#include "../ebm.h"
#include <math.h>

#define RES 128
#define GAP 4

static void ramp(double v, unsigned char *rgb) /* toy2d's colours */
{
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    rgb[0] = (unsigned char)(255 * sqrt(v));
    rgb[1] = (unsigned char)(255 * v * v);
    rgb[2] = (unsigned char)(255 * (v < 0.5 ? 0.6 * v : 0.3 * (1 - v)));
}

static void cell(unsigned char *img, int W, int row, int col, const double *d)
{
    double mx = 0;
    int i;
    for (i = 0; i < RES * RES; i++) if (d[i] > mx) mx = d[i];
    for (i = 0; i < RES * RES; i++)
        ramp(mx > 0 ? d[i] / mx : 0, img + 3 * ((size_t)(row * (RES + GAP) + i / RES) * W + col * (RES + GAP) + i % RES));
}

int main(int argc, char **argv)
{
    int n_rec = argc - 3, W, H, set, r, i;
    unsigned char *img;
    double d[RES * RES];
    ebm_error err;
    if (argc < 4) { fprintf(stderr, "usage: %s DIR OUT.png RECIPE...\n", argv[0]); return 2; }
    W = (n_rec + 1) * (RES + GAP) - GAP;
    H = EBM_TOY_COUNT * (RES + GAP) - GAP;
    img = (unsigned char *)malloc((size_t)W * H * 3);
    if (!img) return 1;
    memset(img, 255, (size_t)W * H * 3);
    for (set = 0; set < EBM_TOY_COUNT; set++) {
        float lo, hi;
        ebm_toy_box(set, &lo, &hi);
        for (i = 0; i < RES * RES; i++) /* toy2d's grid: row 0 at the top */
            d[i] = exp(ebm_toy_logpdf(set, lo + (i % RES + 0.5) * (hi - lo) / RES, hi - (i / RES + 0.5) * (hi - lo) / RES));
        cell(img, W, set, 0, d);
        for (r = 0; r < n_rec; r++) {
            char path[1024];
            float *p = NULL;
            int nd, shape[4];
            snprintf(path, sizeof path, "%s/%s_%s.npy", argv[1], ebm_toy_name(set), argv[3 + r]);
            if (ebm_npy_load(path, &p, &nd, shape, &err) != EBM_OK || nd != 2 || shape[0] != RES || shape[1] != RES) {
                fprintf(stderr, "panel2d: %s: %s (cell left grey)\n", path, err.msg);
                for (i = 0; i < RES * RES; i++) d[i] = 0;
                cell(img, W, set, r + 1, d);
                for (i = 0; i < RES * RES; i++) memset(img + 3 * ((size_t)(set * (RES + GAP) + i / RES) * W + (r + 1) * (RES + GAP) + i % RES), 128, 3);
            } else {
                for (i = 0; i < RES * RES; i++) d[i] = p[i];
                cell(img, W, set, r + 1, d);
            }
            free(p);
        }
    }
    if (ebm_png_save(argv[2], img, W, H, 3, "rows: 8 Gaussians, rings, checkerboard, moons; columns: truth, then each recipe's exp(f)/Z", &err) != EBM_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s\n", argv[2]);
    free(img);
    return 0;
}
