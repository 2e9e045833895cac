/* Shared by bench.c and ab_side.c, included after ebm.h: a conv layer of a
   model at batch n as a kernel geometry, and the scratch bytes the largest
   of its three passes needs. A transposed conv's geometry is that of the
   conv it transposes: x its output, y its input. */
static size_t layer_geom(const ebm_layer *L, int n, ebm__cgeom *G)
{
    size_t sb;
    G->n = n; G->hx = L->in_h; G->wx = L->in_w; G->cx = L->in_c; G->hy = L->out_h; G->wy = L->out_w; G->cy = L->out_c;
    if (L->type == EBM_LAYER_CONVT2D) {
        G->hx = L->out_h; G->wx = L->out_w; G->cx = L->out_c; G->hy = L->in_h; G->wy = L->in_w; G->cy = L->in_c;
    }
    G->k = L->k; G->s = L->stride; G->p = L->pad;
    sb = ebm__conv_fwd_scratch(G);
    if (ebm__conv_bwd_data_scratch(G) > sb) sb = ebm__conv_bwd_data_scratch(G);
    if (ebm__conv_bwd_weight_scratch(G) > sb) sb = ebm__conv_bwd_weight_scratch(G);
    return sb;
}
