"""State-dict keys and shapes of the original AttnGAN modules (taoxugit/AttnGAN code/model.py,
torchvision's Inception-v3), written from the original code's module layout, not generated from
attnfast's modules. Modern PyTorch adds ``num_batches_tracked`` to every BatchNorm; it is listed.

Each function returns {key: shape} in the original registration order.
"""


def _bn(prefix, n):
    return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
            f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}


def _up_block(prefix, cin, cout):
    # Upsample (0), conv3x3 cin -> 2*cout (1), BatchNorm2d(2*cout) (2), GLU (3)
    return {f"{prefix}.1.weight": (2 * cout, cin, 3, 3), **_bn(f"{prefix}.2", 2 * cout)}


def _res_block(prefix, c):
    # block: conv3x3 c -> 2c (0), BN (1), GLU (2), conv3x3 c -> c (3), BN (4)
    return {f"{prefix}.block.0.weight": (2 * c, c, 3, 3), **_bn(f"{prefix}.block.1", 2 * c),
            f"{prefix}.block.3.weight": (c, c, 3, 3), **_bn(f"{prefix}.block.4", c)}


def ca_net(t_dim=256, c_dim=100, prefix=""):
    return {f"{prefix}fc.weight": (4 * c_dim, t_dim), f"{prefix}fc.bias": (4 * c_dim,)}


def _next_stage(prefix, ngf, nef, r_num):
    keys = {f"{prefix}.att.conv_context.weight": (ngf, nef, 1, 1)}
    for i in range(r_num):
        keys.update(_res_block(f"{prefix}.residual.{i}", 2 * ngf))
    keys.update(_up_block(f"{prefix}.upsample", 2 * ngf, ngf))
    return keys


def g_net(branch_num=3, ngf=32, nef=256, ncf=100, z_dim=100, r_num=2):
    """Birds config by default: h_net1.fc.0.weight is (512*4*4*2, 100+100) = (16384, 200)."""
    g16 = ngf * 16
    keys = dict(ca_net(nef, ncf, prefix="ca_net."))
    keys["h_net1.fc.0.weight"] = (g16 * 4 * 4 * 2, z_dim + ncf)
    keys.update(_bn("h_net1.fc.1", g16 * 4 * 4 * 2))
    for i, (cin, cout) in enumerate([(g16, g16 // 2), (g16 // 2, g16 // 4), (g16 // 4, g16 // 8),
                                     (g16 // 8, g16 // 16)], start=1):
        keys.update(_up_block(f"h_net1.upsample{i}", cin, cout))
    keys["img_net1.img.0.weight"] = (3, ngf, 3, 3)
    for stage in range(2, branch_num + 1):
        keys.update(_next_stage(f"h_net{stage}", ngf, nef, r_num))
        keys[f"img_net{stage}.img.0.weight"] = (3, ngf, 3, 3)
    return keys


def _d_logits(prefix, ndf, nef, cond):
    keys = {}
    if cond:
        keys[f"{prefix}.jointConv.0.weight"] = (ndf * 8, ndf * 8 + nef, 3, 3)
        keys.update(_bn(f"{prefix}.jointConv.1", ndf * 8))
    keys[f"{prefix}.outlogits.0.weight"] = (1, ndf * 8, 4, 4)
    keys[f"{prefix}.outlogits.0.bias"] = (1,)
    return keys


def _s16(ndf):
    return {"img_code_s16.0.weight": (ndf, 3, 4, 4),
            "img_code_s16.2.weight": (ndf * 2, ndf, 4, 4), **_bn("img_code_s16.3", ndf * 2),
            "img_code_s16.5.weight": (ndf * 4, ndf * 2, 4, 4), **_bn("img_code_s16.6", ndf * 4),
            "img_code_s16.8.weight": (ndf * 8, ndf * 4, 4, 4), **_bn("img_code_s16.9", ndf * 8)}


def _conv_bn(prefix, cin, cout, k):
    return {f"{prefix}.0.weight": (cout, cin, k, k), **_bn(f"{prefix}.1", cout)}


def d_net(resolution, ndf=64, nef=256, b_jcu=True):
    keys = _s16(ndf)
    if resolution >= 128:
        keys.update(_conv_bn("img_code_s32", ndf * 8, ndf * 16, 4))
    if resolution == 128:
        keys.update(_conv_bn("img_code_s32_1", ndf * 16, ndf * 8, 3))
    if resolution == 256:
        keys.update(_conv_bn("img_code_s64", ndf * 16, ndf * 32, 4))
        keys.update(_conv_bn("img_code_s64_1", ndf * 32, ndf * 16, 3))
        keys.update(_conv_bn("img_code_s64_2", ndf * 16, ndf * 8, 3))
    if b_jcu:
        keys.update(_d_logits("UNCOND_DNET", ndf, nef, cond=False))
    keys.update(_d_logits("COND_DNET", ndf, nef, cond=True))
    return keys


def rnn_encoder(ntoken, ninput=300, nhidden=256):
    h = nhidden // 2
    keys = {"encoder.weight": (ntoken, ninput)}
    for suffix in ("", "_reverse"):
        keys.update({f"rnn.weight_ih_l0{suffix}": (4 * h, ninput), f"rnn.weight_hh_l0{suffix}": (4 * h, h),
                     f"rnn.bias_ih_l0{suffix}": (4 * h,), f"rnn.bias_hh_l0{suffix}": (4 * h,)})
    return keys


def _basic(prefix, cin, cout, kh, kw=None):
    kw = kh if kw is None else kw
    return {f"{prefix}.conv.weight": (cout, cin, kh, kw), **_bn(f"{prefix}.bn", cout)}


def _mixed_a(p, cin, pool):
    return {**_basic(f"{p}.branch1x1", cin, 64, 1), **_basic(f"{p}.branch5x5_1", cin, 48, 1),
            **_basic(f"{p}.branch5x5_2", 48, 64, 5), **_basic(f"{p}.branch3x3dbl_1", cin, 64, 1),
            **_basic(f"{p}.branch3x3dbl_2", 64, 96, 3), **_basic(f"{p}.branch3x3dbl_3", 96, 96, 3),
            **_basic(f"{p}.branch_pool", cin, pool, 1)}


def _mixed_b(p, cin):
    return {**_basic(f"{p}.branch3x3", cin, 384, 3), **_basic(f"{p}.branch3x3dbl_1", cin, 64, 1),
            **_basic(f"{p}.branch3x3dbl_2", 64, 96, 3), **_basic(f"{p}.branch3x3dbl_3", 96, 96, 3)}


def _mixed_c(p, c7):
    return {**_basic(f"{p}.branch1x1", 768, 192, 1), **_basic(f"{p}.branch7x7_1", 768, c7, 1),
            **_basic(f"{p}.branch7x7_2", c7, c7, 1, 7), **_basic(f"{p}.branch7x7_3", c7, 192, 7, 1),
            **_basic(f"{p}.branch7x7dbl_1", 768, c7, 1), **_basic(f"{p}.branch7x7dbl_2", c7, c7, 7, 1),
            **_basic(f"{p}.branch7x7dbl_3", c7, c7, 1, 7), **_basic(f"{p}.branch7x7dbl_4", c7, c7, 7, 1),
            **_basic(f"{p}.branch7x7dbl_5", c7, 192, 1, 7), **_basic(f"{p}.branch_pool", 768, 192, 1)}


def _mixed_d(p):
    return {**_basic(f"{p}.branch3x3_1", 768, 192, 1), **_basic(f"{p}.branch3x3_2", 192, 320, 3),
            **_basic(f"{p}.branch7x7x3_1", 768, 192, 1), **_basic(f"{p}.branch7x7x3_2", 192, 192, 1, 7),
            **_basic(f"{p}.branch7x7x3_3", 192, 192, 7, 1), **_basic(f"{p}.branch7x7x3_4", 192, 192, 3)}


def _mixed_e(p, cin):
    return {**_basic(f"{p}.branch1x1", cin, 320, 1), **_basic(f"{p}.branch3x3_1", cin, 384, 1),
            **_basic(f"{p}.branch3x3_2a", 384, 384, 1, 3), **_basic(f"{p}.branch3x3_2b", 384, 384, 3, 1),
            **_basic(f"{p}.branch3x3dbl_1", cin, 448, 1), **_basic(f"{p}.branch3x3dbl_2", 448, 384, 3),
            **_basic(f"{p}.branch3x3dbl_3a", 384, 384, 1, 3),
            **_basic(f"{p}.branch3x3dbl_3b", 384, 384, 3, 1), **_basic(f"{p}.branch_pool", cin, 192, 1)}


def inception_backbone():
    """torchvision Inception-v3 up to Mixed_7c (what CNN_ENCODER keeps)."""
    return {**_basic("Conv2d_1a_3x3", 3, 32, 3), **_basic("Conv2d_2a_3x3", 32, 32, 3),
            **_basic("Conv2d_2b_3x3", 32, 64, 3), **_basic("Conv2d_3b_1x1", 64, 80, 1),
            **_basic("Conv2d_4a_3x3", 80, 192, 3),
            **_mixed_a("Mixed_5b", 192, 32), **_mixed_a("Mixed_5c", 256, 64),
            **_mixed_a("Mixed_5d", 288, 64), **_mixed_b("Mixed_6a", 288),
            **_mixed_c("Mixed_6b", 128), **_mixed_c("Mixed_6c", 160), **_mixed_c("Mixed_6d", 160),
            **_mixed_c("Mixed_6e", 192), **_mixed_d("Mixed_7a"), **_mixed_e("Mixed_7b", 1280),
            **_mixed_e("Mixed_7c", 2048)}


def inception_v3(num_classes=1000):
    """torchvision ``inception_v3(aux_logits=False)``: 23,834,568 parameters."""
    return {**inception_backbone(), "fc.weight": (num_classes, 2048), "fc.bias": (num_classes,)}


def cnn_encoder(nef=256):
    return {**inception_backbone(), "emb_features.weight": (nef, 768, 1, 1),
            "emb_cnn_code.weight": (nef, 2048), "emb_cnn_code.bias": (nef,)}
