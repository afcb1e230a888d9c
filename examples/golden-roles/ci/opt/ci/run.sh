#!/bin/sh
echo "ci runner of the golden image"
