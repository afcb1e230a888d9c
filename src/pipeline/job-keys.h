/* SPDX-License-Identifier: MIT */
/*
 * job-keys.h - what job.c tells the YAML reader (job-yaml.c): names of ops
 * and keys, which keys each op takes, and "did you mean" lookups.
 */
#ifndef DF_PIPELINE_JOB_KEYS_H
#define DF_PIPELINE_JOB_KEYS_H

#include "job.h"

#define JOB_KEY_BIT(k) (UINT64_C(1) << (k))

int job_op_parse(const char *name, enum job_op *out);
int job_key_parse(const char *name, enum job_key *out);
uint64_t job_op_allowed_keys(enum job_op op);
uint64_t job_op_required_keys(enum job_op op);
/* Keys that `defaults:` may set. */
extern const uint64_t job_default_keys;

bool job_var_name_ok(const char *s, size_t len);

/* The candidate closest to @word, or NULL when none is close enough. */
const char *job_closest(const char *word, const char *const *cands, size_t n);
const char *job_closest_key(const char *word, uint64_t allowed);
const char *job_closest_op(const char *word);

void job_strv_release(struct job_strv *v);
void job_step_release(struct job_step *s);

#endif
