/* What the image-training examples share: loading a data set by name, and
   the plot of the CSV log's d_t and r_t. Include after ebm.h. */
#ifndef EBM_EXAMPLE_IMAGES_H
#define EBM_EXAMPLE_IMAGES_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The training images of data set `data` ("fashion", "mnist", "cifar10";
   index ds_i in that order) from data_dir (Debian's directory for fashion
   when NULL): 0, or 1 (2 for a missing flag) after a message. */
static int load_images(int ds_i, const char *data_dir, ebm_dataset *ds)
{
    ebm_error err;
    if (ds_i == 2) {
        char names[5][1100];
        const char *paths[5];
        int i;
        if (!data_dir) { fprintf(stderr, "error: --data cifar10 needs --data-dir (data_batch_1.bin ... data_batch_5.bin)\n"); return 2; }
        for (i = 0; i < 5; i++) { snprintf(names[i], sizeof names[i], "%s/data_batch_%d.bin", data_dir, i + 1); paths[i] = names[i]; }
        if (ebm_cifar10_load(ds, paths, 5, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
        return 0;
    }
    if (ds_i == 1 && !data_dir) { fprintf(stderr, "error: --data mnist needs --data-dir\n"); return 2; }
    if (ebm_mnist_load(ds, data_dir, 0, &err) != EBM_OK) {
        fprintf(stderr, "error: %s\n%s", err.msg, ds_i == 0 ? "(Fashion-MNIST: apt-get install dataset-fashion-mnist)\n" : "");
        return 1;
    }
    return 0;
}

/* Read DIR/log.csv back (columns iter, seconds, lr, then the two to plot,
   named a and b) and plot them in DIR/curves.png. */
static void plot_log(const char *dir, const char *a, const char *b)
{
    char path[1100], line[512];
    FILE *f;
    float *y = NULL;
    int n = 0, cap = 0;
    snprintf(path, sizeof path, "%s/log.csv", dir);
    if (!(f = fopen(path, "r"))) return;
    while (fgets(line, sizeof line, f)) {
        double it, sec, lr, dt, rt;
        if (sscanf(line, "%lf,%lf,%lf,%lf,%lf", &it, &sec, &lr, &dt, &rt) != 5) continue;
        if (n == cap) { float *ny; cap = cap ? 2 * cap : 4096; ny = (float *)realloc(y, 2 * (size_t)cap * sizeof *y); if (!ny) break; y = ny; }
        y[2 * n] = (float)dt; y[2 * n + 1] = (float)rt;
        n++;
    }
    fclose(f);
    if (n > 0) {
        const char *names[2];
        float *p = (float *)malloc(2 * (size_t)n * sizeof *p);
        int i;
        ebm_error err;
        names[0] = a; names[1] = b;
        if (p) {
            for (i = 0; i < n; i++) { p[i] = y[2 * i]; p[n + i] = y[2 * i + 1]; }
            snprintf(path, sizeof path, "%s/curves.png", dir);
            if (ebm_png_save_plot(path, p, 2, n, names, &err) != EBM_OK) fprintf(stderr, "warning: %s\n", err.msg);
            free(p);
        }
    }
    free(y);
}
#endif
