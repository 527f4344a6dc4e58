/* vmdiskfs - a typed growable array.
 *
 *   VD_VECTOR (name_vec, char *);        struct name_vec and its functions
 *   struct name_vec v = { 0 };
 *   if (name_vec_append (&v, s) < 0)     -1: errno ENOMEM, v unchanged
 *     ...
 *   v.ptr[0 .. v.len-1]; free (v.ptr);
 *
 * The capacity doubles (at least 8 elements), so n appends cost O(n);
 * element counts and byte sizes are checked against overflow (ENOMEM).
 * vd_vec_grow is the one growth step, also for byte buffers that keep
 * their own pointer, length and capacity (buf.c).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_VEC_H
#define VD_VEC_H

#include <stddef.h>

/* Room for more elements of elem bytes after the first len in ptr (cap
 * allocated): ptr realloc'd to a capacity of at least len + more (cap
 * doubled as often as needed), stored in *cap.  Returns the new pointer,
 * or NULL with errno ENOMEM (ptr and *cap unchanged). */
void *vd_vec_grow (void *ptr, size_t *cap, size_t len, size_t more,
                   size_t elem);

#define VD_VECTOR(name, type)                                           \
  struct name {                                                         \
    type *ptr;                                                          \
    size_t len, cap;                                                    \
  };                                                                    \
  /* Room for more elements.  0, or -1 with errno ENOMEM. */            \
  static inline int                                                     \
  name##_reserve (struct name *v, size_t more)                          \
  {                                                                     \
    type *p;                                                            \
                                                                        \
    if (v->cap - v->len >= more)                                        \
      return 0;                                                         \
    p = vd_vec_grow (v->ptr, &v->cap, v->len, more, sizeof (type));     \
    if (!p)                                                             \
      return -1;                                                        \
    v->ptr = p;                                                         \
    return 0;                                                           \
  }                                                                     \
  /* Append x.  0, or -1 with errno ENOMEM (v unchanged). */            \
  static inline int                                                     \
  name##_append (struct name *v, type x)                                \
  {                                                                     \
    if (name##_reserve (v, 1) < 0)                                      \
      return -1;                                                        \
    v->ptr[v->len++] = x;                                               \
    return 0;                                                           \
  }

#endif
