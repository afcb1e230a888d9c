/* SPDX-License-Identifier: MIT */
/* check.c - df_check(): open an image for checking and run its driver's
 * check. */
#include "qcow2/qcow2.h"

int df_check(const char *path, enum df_format fmt, enum df_repair repair,
             struct df_check_result *res, df_message_fn msg, void *opaque,
             struct df_error *err)
{
    unsigned flags = DF_OPEN_NO_BACKING | DF_OPEN_CHECK;
    struct df_image *img;
    int ret;

    if ((unsigned)repair == DF_CHECK_SHARE) {
        flags |= DF_OPEN_SHARE;
        repair = DF_REPAIR_NONE;
    }
    if ((unsigned)repair > DF_REPAIR_ALL) {
        return df_fail(err, DF_E_INVAL, "'%s': unknown repair mode", path);
    }
    if (repair != DF_REPAIR_NONE) {
        flags |= DF_OPEN_RDWR;
    }
    img = df_image_open(path, fmt, flags, err);
    if (!img) {
        return -err->code;
    }
    if (df_image_format(img) != DF_FMT_QCOW2) {
        df_image_close(img, NULL);
        return df_fail(err, DF_E_UNSUPPORTED, "'%s': this image format does "
                       "not support checks", path);
    }
    ret = qcow2_check(img, repair, res, msg, opaque, err);
    if (df_image_close(img, ret < 0 ? NULL : err) < 0 && ret == 0) {
        ret = -err->code;
    }
    return ret;
}
